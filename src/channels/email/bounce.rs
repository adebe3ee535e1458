//! Is this a bounce, and of which message? A delivery status report (RFC 3464) names the failed
//! message in its returned headers; Postfix, Exim and Exchange all attach them. A bounce of one of
//! our acknowledgements stops further acknowledgements to that address for a while, so a dead
//! address is not mailed again and again.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

/// What a bounce says about the message it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// Message-IDs (with angle brackets) of the returned message.
    pub message_ids: Vec<String>,
    /// A permanent failure (5.x.x, or `Action: failed`); a delay warning is not.
    pub permanent: bool,
}

/// Local parts that send non-standard bounces (a plain-text notice with the headers quoted).
const BOUNCERS: &[&str] = &["mailer-daemon", "postmaster"];

pub fn bounce(msg: &Message<'_>) -> Option<Bounce> {
    let dsn = msg.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct
                .attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    });
    let from_bouncer = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(|a| a.split('@').next())
        .is_some_and(|local| BOUNCERS.contains(&local.to_ascii_lowercase().as_str()));
    if !dsn && !from_bouncer {
        return None;
    }

    let mut ids = Vec::new();
    let mut status: Option<bool> = None;
    for part in msg.parts.iter().skip(1) {
        let kind = part
            .content_type()
            .map(|ct| {
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_ascii_lowercase()
            })
            .unwrap_or_default();
        match (&part.body, kind.as_str()) {
            (PartType::Message(inner), _) => ids.extend(inner.message_id().map(bracket)),
            (_, "message/delivery-status" | "message/global-delivery-status") => {
                let fields = String::from_utf8_lossy(part.contents());
                let permanent = fields.lines().any(|l| {
                    let l = l.trim().to_ascii_lowercase();
                    l.strip_prefix("status:")
                        .is_some_and(|v| v.trim().starts_with('5'))
                        || l.strip_prefix("action:")
                            .is_some_and(|v| v.trim() == "failed")
                });
                status = Some(status.unwrap_or(false) || permanent);
            }
            (_, "text/rfc822-headers" | "message/rfc822-headers" | "text/rfc822") => {
                if let Some(inner) = MessageParser::default().parse_headers(part.contents()) {
                    ids.extend(inner.message_id().map(bracket));
                }
            }
            _ => {}
        }
    }
    let body = msg.body_text(0).unwrap_or_default();
    if ids.is_empty() {
        // A plain-text bounce quotes the returned headers in its body.
        ids.extend(quoted_message_ids(&body));
    }
    if status.is_none() && is_delay_notice(&body) {
        status = Some(false);
    }
    ids.sort();
    ids.dedup();
    Some(Bounce {
        message_ids: ids,
        // No status part: a mailer-daemon's notice is a failure unless it says otherwise.
        permanent: status.unwrap_or(true),
    })
}

/// A plain-text "still trying" warning (Exim, qmail, Exchange), which is not a failure.
fn is_delay_notice(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    [
        "delayed",
        "will retry",
        "will keep trying",
        "still trying",
        "warning: message",
    ]
    .iter()
    .any(|w| b.contains(w))
}

fn bracket(id: &str) -> String {
    format!(
        "<{}>",
        id.trim().trim_start_matches('<').trim_end_matches('>')
    )
}

fn quoted_message_ids(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['>', ' ', '\t']);
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("message-id")
                .then(|| value.trim())
                .filter(|v| v.starts_with('<') && v.contains('@') && v.ends_with('>'))
                .map(bracket)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Option<Bounce> {
        bounce(&MessageParser::default().parse(raw).unwrap())
    }

    #[test]
    fn a_dsn_names_the_returned_message_and_a_permanent_failure() {
        let raw = std::fs::read("fixtures/email/14-bounce.eml").unwrap();
        assert_eq!(
            parse(&raw),
            Some(Bounce {
                message_ids: vec!["<PA-2H6J-W8ZB.20261126081500@hue.example.vn>".into()],
                permanent: true
            })
        );
    }

    #[test]
    fn a_delay_warning_is_not_permanent() {
        let raw = std::fs::read_to_string("fixtures/email/14-bounce.eml")
            .unwrap()
            .replace("Action: failed", "Action: delayed")
            .replace("Status: 5.1.1", "Status: 4.4.1");
        assert!(!parse(raw.as_bytes()).unwrap().permanent);
    }

    #[test]
    fn a_plain_text_bounce_quotes_the_headers() {
        let raw = b"From: MAILER-DAEMON@mx.example.com\r\nTo: dttm@hue.example.vn\r\nSubject: failure notice\r\n\r\nSorry, no mailbox here by that name.\r\n\r\n--- Below this line is a copy of the message.\r\n\r\nMessage-ID: <PA-AAAA-BBBB.01J@hue.example.vn>\r\nSubject: x\r\n";
        assert_eq!(
            parse(raw).unwrap().message_ids,
            vec!["<PA-AAAA-BBBB.01J@hue.example.vn>".to_string()]
        );
    }

    #[test]
    fn a_plain_text_delay_warning_is_not_permanent() {
        let raw = b"From: MAILER-DAEMON@mx.example.com\r\nSubject: Warning: message delayed\r\n\r\nThis message has been delayed; the system will keep trying for 5 days.\r\n\r\nMessage-ID: <PA-AAAA-BBBB.01J@hue.example.vn>\r\n";
        assert!(!parse(raw).unwrap().permanent);
    }

    #[test]
    fn an_auto_reply_is_not_a_bounce() {
        let raw = std::fs::read("fixtures/email/13-auto-reply.eml").unwrap();
        assert_eq!(parse(&raw), None);
    }
}
