//! RFC 3977 §4 wildmat: comma-separated patterns with `*` and `?`, a `!` pattern excludes; the
//! last pattern that matches decides. (A few lines; no crate needed.)

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Whether `name` matches the wildmat.
pub fn matches(wildmat: &str, name: &str) -> bool {
    let mut verdict = false;
    for pattern in wildmat.split(',') {
        let (negated, p) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if glob(p.as_bytes(), name.as_bytes()) {
            verdict = !negated;
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn the_last_matching_pattern_decides() {
        assert!(matches("*", "hub.b"));
        assert!(matches("hub.*", "hub.b"));
        assert!(!matches("hub.*,!hub.b", "hub.b"));
        assert!(matches("hub.*,!hub.b", "hub.c"));
        assert!(matches("hub.?", "hub.c"));
        assert!(!matches("hub.?", "hub.cc"));
        assert!(!matches("other.*", "hub.b"));
    }
}
