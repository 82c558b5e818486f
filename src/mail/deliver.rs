//! `hubcast deliver --topic NAME < message`: for `.forward`, procmail or a mail server's pipe
//! transport. It hands the message to the running hub's LMTP listener (the hub holds its store
//! while it runs) and turns the answer into the exit codes mail servers understand
//! (sysexits): 0 stored, 75 try again later, 67 no such topic, 65 refused message.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::config::gateways::{LmtpConfig, LmtpListen};

/// sysexits.h.
pub const EX_OK: u8 = 0;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOUSER: u8 = 67;
pub const EX_TEMPFAIL: u8 = 75;

/// Longest one exchange may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What became of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub exit: u8,
    /// The hub's last answer (or why there was none).
    pub reply: String,
}

/// Hands `message` to the hub for topic `name`, from `sender` (the envelope sender, may be
/// empty).
pub async fn deliver(cfg: &LmtpConfig, name: &str, sender: &str, message: &[u8]) -> Outcome {
    if !cfg.enabled {
        return Outcome {
            exit: EX_TEMPFAIL,
            reply: "lmtp.enabled is false in this config: the hub takes no mail".into(),
        };
    }
    let exchange = async {
        match &cfg.listen {
            LmtpListen::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
                converse(s, cfg, name, sender, message).await
            }
            LmtpListen::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await?;
                converse(s, cfg, name, sender, message).await
            }
        }
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome {
            exit: EX_TEMPFAIL,
            reply: format!(
                "cannot reach the hub's LMTP listener at {} (lmtp.listen): {e}",
                cfg.listen
            ),
        },
        Err(_) => Outcome {
            exit: EX_TEMPFAIL,
            reply: format!("the hub did not answer within {}s", TIMEOUT.as_secs()),
        },
    }
}

async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the hub closed the connection",
            ));
        }
        let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        let last = line.as_bytes().get(3) != Some(&b'-');
        text.push_str(line.trim_end());
        if last {
            return Ok((code, text));
        }
        text.push(' ');
    }
}

fn exit_of(code: u16, text: &str) -> u8 {
    match code {
        200..=299 => EX_OK,
        400..=499 => EX_TEMPFAIL,
        _ if text.contains("5.1.1") || text.contains("5.1.2") => EX_NOUSER,
        _ => EX_DATAERR,
    }
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    cfg: &LmtpConfig,
    name: &str,
    sender: &str,
    message: &[u8],
) -> std::io::Result<Outcome> {
    let mut s = BufReader::new(s);
    let fail = |code: u16, text: String| Outcome {
        exit: exit_of(code, &text),
        reply: text,
    };
    let (code, text) = reply(&mut s).await?;
    if code != 220 {
        return Ok(fail(code, text));
    }
    let steps = [
        "LHLO localhost\r\n".to_owned(),
        format!("MAIL FROM:<{sender}>\r\n"),
        format!("RCPT TO:<{name}@{}>\r\n", cfg.domain),
        "DATA\r\n".to_owned(),
    ];
    for step in steps {
        s.get_mut().write_all(step.as_bytes()).await?;
        let (code, text) = reply(&mut s).await?;
        if !(200..400).contains(&code) {
            return Ok(fail(code, text));
        }
    }
    s.get_mut().write_all(&dot_stuffed(message)).await?;
    let (code, text) = reply(&mut s).await?;
    let _ = s.get_mut().write_all(b"QUIT\r\n").await;
    Ok(Outcome {
        exit: exit_of(code, &text),
        reply: text,
    })
}

/// The message with CRLF line ends, leading dots doubled, and the final `.` line.
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    for line in message.split_inclusive(|b| *b == b'\n') {
        let body = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if body.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_dot_stuffed_with_crlf() {
        assert_eq!(dot_stuffed(b"a\n.b\r\nc"), b"a\r\n..b\r\nc\r\n.\r\n");
    }

    #[test]
    fn answers_become_sysexits() {
        assert_eq!(exit_of(250, ""), EX_OK);
        assert_eq!(exit_of(451, ""), EX_TEMPFAIL);
        assert_eq!(exit_of(550, "550 5.1.1 no list"), EX_NOUSER);
        assert_eq!(exit_of(552, "552 5.3.4"), EX_DATAERR);
    }
}
