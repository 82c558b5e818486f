//! RFC 3977 §4 wildmat: comma-separated patterns with `*` and `?`, a `!` pattern excludes; the
//! last pattern that matches decides. (A few lines; no crate needed.) Matching is iterative and
//! remembers only the last `*`, so it takes at most pattern × name steps whatever the stars.

fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(b'?') => {
                pi += 1;
                si += 1;
            }
            Some(c) if c.eq_ignore_ascii_case(&s[si]) => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
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
        assert!(matches("*b*", "hub.b"));
        assert!(matches("h*.*b", "hub.b"));
    }

    #[test]
    fn many_stars_cost_little() {
        let pattern = format!("{}x", "*".repeat(250));
        let name = "a".repeat(200);
        let t = std::time::Instant::now();
        assert!(!matches(&pattern, &name));
        assert!(t.elapsed() < std::time::Duration::from_millis(50));
    }
}
