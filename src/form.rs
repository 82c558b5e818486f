//! `application/x-www-form-urlencoded` parsing that refuses what it cannot read exactly: a
//! name or value whose percent-decoded bytes are not UTF-8 is an error naming the parameter,
//! not a string with replacement characters. Linear in the input.

use std::borrow::Cow;

/// A parameter that is not valid UTF-8 once decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not valid UTF-8 once percent-decoded")]
pub struct FormError(pub String);

/// The pairs of `input` in order (`+` is a space, `%XX` a byte; pairs without `=` have an
/// empty value; empty pairs are skipped).
pub fn parse(input: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut pairs = Vec::new();
    for part in input.split(|&b| b == b'&') {
        if part.is_empty() {
            continue;
        }
        let (name, value) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &[][..]),
        };
        let name = decode(name).ok_or_else(|| FormError(lossy(name)))?;
        let value = decode(value).ok_or_else(|| FormError(name.clone()))?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn decode(raw: &[u8]) -> Option<String> {
    let plus_as_space: Cow<[u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).ok()
}

/// A name that is not UTF-8, shown with replacement characters (for the error only).
fn lossy(raw: &[u8]) -> String {
    let decoded: Vec<u8> = percent_encoding::percent_decode(raw).collect();
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Vec<(String, String)> {
        parse(input.as_bytes()).unwrap()
    }

    #[test]
    fn reads_what_form_encoders_write() {
        assert_eq!(
            ok("hub.mode=subscribe&hub.topic=http%3A%2F%2Fa%2F%3Fx%3D1+2&&flag&e="),
            [
                ("hub.mode".into(), "subscribe".into()),
                ("hub.topic".into(), "http://a/?x=1 2".into()),
                ("flag".into(), String::new()),
                ("e".into(), String::new()),
            ]
        );
        assert_eq!(ok("k=caf%C3%A9"), [("k".into(), "café".into())]);
        // A stray percent sign is kept as it is, as browsers do.
        assert_eq!(ok("k=100%"), [("k".into(), "100%".into())]);
    }

    #[test]
    fn refuses_bytes_that_are_not_utf8_naming_the_parameter() {
        assert_eq!(
            parse(b"hub.mode=publish&hub.url=http%3A%2F%2Fa%2F%FF").unwrap_err(),
            FormError("hub.url".into())
        );
        assert!(parse(b"hub%FF=1").unwrap_err().0.starts_with("hub"));
        assert!(parse(b"k=\xff").is_err(), "raw bytes too");
    }

    #[test]
    fn agrees_with_the_lenient_parser_on_valid_input() {
        let input = "a=1&b=%20x+y&c&=d&e=%E2%9C%93&a=2";
        let lenient: Vec<(String, String)> = url::form_urlencoded::parse(input.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(ok(input), lenient);
    }
}
