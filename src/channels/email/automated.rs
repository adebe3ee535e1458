//! Is this message written by a machine? Auto-replies, bounces, read receipts, list traffic and
//! our own mail coming back are stored, but never open a report and are never answered, so no mail
//! loop can start. The rules follow RFC 3834 and what Zammad, RT and WildDuck check
//! (../shared/notes/email-and-helpdesks.md §4).

use mail_parser::{Message, MimeHeaders};

/// The header we stamp on everything we send; seeing it come back means a loop.
pub const LOOP_HEADER: &str = "X-Phananh-Loop";

/// Sender local parts that belong to machines and lists.
const SYSTEM_LOCAL_PARTS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "abuse",
    "root",
    "listserv",
    "majordomo",
];

/// Our acknowledgements' Message-IDs look like `<PA-7K3M-Q2XD.<report id>@our-domain>`. Only that
/// shape counts: mail clients also put the sender's domain in their Message-IDs, so a domain
/// alone would catch citizens who share the centre's mail provider, and staff.
fn is_our_message_id(id: &str, own_addresses: &[String]) -> bool {
    static ACK_ID: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)^<?[A-Z0-9]{1,6}-[A-Z0-9]{4}-[A-Z0-9]{4}\.[0-9A-Z]+@([^>]+)>?$")
            .expect("valid regex")
    });
    let Some(domain) = ACK_ID.captures(id.trim()).and_then(|c| c.get(1)) else {
        return false;
    };
    let domain = domain.as_str().to_ascii_lowercase();
    own_addresses
        .iter()
        .any(|a| a.rsplit('@').next() == Some(domain.as_str()))
}

/// Which rule matched (a stable name, stored with the item), or None for mail from a person.
/// `own_addresses` are the centre's own mailboxes, in lowercase.
pub fn classify(msg: &Message<'_>, own_addresses: &[String]) -> Option<&'static str> {
    let raw = |name: &str| msg.header_raw(name).map(|v| v.trim().to_ascii_lowercase());
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(|a| a.trim().to_ascii_lowercase());

    if raw(LOOP_HEADER).is_some() {
        return Some("own_loop_header");
    }
    if from.as_ref().is_some_and(|f| own_addresses.contains(f)) {
        return Some("own_address");
    }
    if let Some(id) = msg.message_id()
        && is_our_message_id(id, own_addresses)
    {
        return Some("own_message_id");
    }
    if let Some(ct) = msg.content_type()
        && ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    {
        let kind = ct
            .attribute("report-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        return Some(match kind.as_str() {
            "delivery-status" => "bounce",
            "disposition-notification" => "read_receipt",
            "feedback-report" => "abuse_report",
            _ => "report",
        });
    }
    if raw("Auto-Submitted").is_some_and(|v| v.split(';').next().unwrap_or_default().trim() != "no")
    {
        return Some("auto_submitted");
    }
    if raw("Return-Path").is_some_and(|v| v == "<>" || v.is_empty()) {
        return Some("null_return_path");
    }
    if let Some(local) = from.as_deref().and_then(|f| f.split('@').next())
        && (SYSTEM_LOCAL_PARTS.contains(&local)
            || local.starts_with("no-reply-")
            || local.starts_with("noreply-")
            || local.starts_with("owner-")
            || local.ends_with("-request")
            || local.ends_with("-bounces"))
    {
        return Some("system_sender");
    }
    if raw("Precedence")
        .is_some_and(|v| matches!(v.as_str(), "bulk" | "junk" | "list" | "auto_reply"))
    {
        return Some("precedence");
    }
    if ["List-Id", "List-Unsubscribe", "List-Post"]
        .iter()
        .any(|h| msg.header_raw(*h).is_some())
    {
        return Some("mailing_list");
    }
    if msg.header_raw("X-Auto-Response-Suppress").is_some() {
        return Some("auto_response_suppress");
    }
    if ["X-Autoreply", "X-Autorespond"]
        .iter()
        .any(|h| msg.header_raw(*h).is_some())
    {
        return Some("auto_reply_header");
    }
    if msg.header_raw("X-Loop").is_some() {
        return Some("x_loop");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn rule(headers: &str) -> Option<&'static str> {
        let raw = format!(
            "From: Dân <dan@example.com>\r\nSubject: x\r\nMessage-ID: <a@example.com>\r\n{headers}\r\nbody\r\n"
        );
        let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
        classify(&msg, &["dttm@hue.example.vn".to_string()])
    }

    #[test]
    fn a_person_writing_is_not_automated() {
        assert_eq!(rule(""), None);
        assert_eq!(rule("Auto-Submitted: no\r\n"), None);
        assert_eq!(rule("Return-Path: <dan@example.com>\r\n"), None);
    }

    #[test]
    fn each_rule_matches_its_signal() {
        assert_eq!(
            rule("Auto-Submitted: auto-replied; owner-email=x@y.z\r\n"),
            Some("auto_submitted")
        );
        assert_eq!(
            rule("Auto-Submitted: Auto-Generated\r\n"),
            Some("auto_submitted")
        );
        assert_eq!(rule("Return-Path: <>\r\n"), Some("null_return_path"));
        assert_eq!(rule("Precedence: bulk\r\n"), Some("precedence"));
        assert_eq!(
            rule("List-Id: <tin-tuc.example.com>\r\n"),
            Some("mailing_list")
        );
        assert_eq!(
            rule("List-Unsubscribe: <mailto:u@example.com>\r\n"),
            Some("mailing_list")
        );
        assert_eq!(
            rule("X-Auto-Response-Suppress: All\r\n"),
            Some("auto_response_suppress")
        );
        assert_eq!(rule("X-Autoreply: yes\r\n"), Some("auto_reply_header"));
        assert_eq!(rule("X-Loop: yes\r\n"), Some("x_loop"));
        assert_eq!(rule("X-Phananh-Loop: hue\r\n"), Some("own_loop_header"));
        assert_eq!(
            rule("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n"),
            Some("bounce")
        );
        assert_eq!(
            rule(
                "Content-Type: multipart/report; report-type=disposition-notification; boundary=b\r\n"
            ),
            Some("read_receipt")
        );
    }

    #[test]
    fn machine_senders_and_our_own_mail_are_recognised() {
        let with_from = |from: &str, id: &str| {
            let raw = format!("From: {from}\r\nSubject: x\r\nMessage-ID: <{id}>\r\n\r\nbody\r\n");
            let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
            classify(&msg, &["dttm@hue.example.vn".to_string()])
        };
        assert_eq!(
            with_from("MAILER-DAEMON@mx.example.com", "a@b.c"),
            Some("system_sender")
        );
        assert_eq!(
            with_from("no-reply-alerts@bank.example.com", "a@b.c"),
            Some("system_sender")
        );
        assert_eq!(
            with_from("tin-tuc-request@lists.example.com", "a@b.c"),
            Some("system_sender")
        );
        assert_eq!(
            with_from("DTTM@hue.example.vn", "a@b.c"),
            Some("own_address")
        );
        assert_eq!(
            with_from("dan@example.com", "PA-7K3M-Q2XD.01jabcdef@hue.example.vn"),
            Some("own_message_id")
        );
        // A person's mail client using the centre's domain in its Message-ID is not ours.
        assert_eq!(
            with_from("can-bo@hue.example.vn", "5f1c9a2e-77@hue.example.vn"),
            None
        );
        assert_eq!(with_from("norris@example.com", "a@b.c"), None);
    }
}
