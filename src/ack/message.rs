//! The acknowledgement as a mail: the operator's template filled in, and the headers that keep
//! it out of loops (RFC 3834 `Auto-Submitted`, Exchange's `X-Auto-Response-Suppress`, our own
//! loop header) and thread it under the citizen's message.

use crate::channels::email::automated::LOOP_HEADER;
use crate::config::AckConfig;
use crate::store::acks::DueAck;
use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MessageBuilder};

/// What the placeholders stand for.
pub struct Vars<'a> {
    pub code: &'a str,
    pub title: &'a str,
    pub received_at: &'a str,
    pub name: &'a str,
    pub channel: &'a str,
}

/// Fills `{word}`s in (the loader checked every word is known).
pub fn render(template: &str, v: &Vars<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        match &after[..close] {
            "code" => out.push_str(v.code),
            "title" => out.push_str(v.title),
            "received_at" => out.push_str(v.received_at),
            "name" => out.push_str(v.name),
            "channel" => out.push_str(v.channel),
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Our Message-ID for a report's acknowledgement: stable across retries (a relay that got it
/// twice can tell), carrying the tracking code (a reply's In-Reply-To finds the report), at our
/// domain (our own mail coming back is recognised).
pub fn message_id(ack: &DueAck, cfg: &AckConfig) -> String {
    let from = cfg.from_address().unwrap_or_default();
    let domain = from.rsplit('@').next().unwrap_or("localhost");
    format!(
        "<{}.{}@{}>",
        ack.tracking_code,
        ack.report_id.to_ascii_lowercase(),
        domain
    )
}

/// Builds the mail, or says why this recipient cannot be written to.
pub fn build(
    ack: &DueAck,
    address: &str,
    cfg: &AckConfig,
    channel: &str,
    message_id: &str,
) -> Result<Message, String> {
    let to_addr = address
        .parse()
        .map_err(|_| "the reporter's address is not one we can write to".to_string())?;
    let name = ack.name.as_deref().filter(|n| !n.trim().is_empty());
    let to = Mailbox::new(name.map(str::to_string), to_addr);
    let from: Mailbox = cfg.from.parse().map_err(|e| format!("from: {e}"))?;
    let received_at = chrono::DateTime::parse_from_rfc3339(&ack.received_at)
        .map(|t| t.format("%H:%M ngày %d/%m/%Y").to_string())
        .unwrap_or_else(|_| ack.received_at.clone());
    let vars = Vars {
        code: &ack.tracking_code,
        title: &ack.title,
        received_at: &received_at,
        name: name.unwrap_or("Quý vị"),
        channel,
    };
    let subject_title: String = ack.title.chars().take(80).collect();
    let subject = render(
        &cfg.subject,
        &Vars {
            title: &subject_title,
            ..vars
        },
    );
    let subject = subject.replace(['\r', '\n'], " ");
    let body = render(cfg.body(), &vars);

    let mut b: MessageBuilder = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .message_id(Some(message_id.to_string()))
        .raw_header(raw("Auto-Submitted", "auto-replied"))
        .raw_header(raw("X-Auto-Response-Suppress", "All"))
        .raw_header(raw(LOOP_HEADER, channel));
    if let Some(r) = &cfg.reply_to {
        b = b.reply_to(r.parse().map_err(|e| format!("reply_to: {e}"))?);
    }
    // Only a real Message-ID threads; a content hash (mail without one) does not.
    if ack.external_id.starts_with('<') {
        b = b
            .in_reply_to(ack.external_id.clone())
            .references(ack.external_id.clone());
    }
    b.header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("cannot build the message: {e}"))
}

pub(crate) fn raw(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AckConfig {
        toml::from_str(
            "from = \"Trung tâm IOC <dttm@hue.example.vn>\"\n[smtp]\nhost = \"127.0.0.1\"\ntls = \"none\"\n",
        )
        .unwrap()
    }

    fn due() -> DueAck {
        DueAck {
            id: 1,
            state: "pending".into(),
            attempts: 0,
            report_id: "01JABCDEF".into(),
            tracking_code: "PA-7K3M-Q2XD".into(),
            title: "Ngập nước đường Lê Lợi".into(),
            submitted_at: "2026-11-26T08:15:00+07:00".into(),
            received_at: "2026-11-26T08:15:09+07:00".into(),
            external_id: "<abc@example.com>".into(),
            email: Some("citizen@example.com".into()),
            name: Some("Nguyễn Văn A".into()),
            next_attempt_ms: 0,
            reason: None,
            psid: None,
        }
    }

    #[test]
    fn templates_fill_every_placeholder_and_leave_other_text() {
        let v = Vars {
            code: "PA-1",
            title: "t",
            received_at: "r",
            name: "n",
            channel: "c",
        };
        assert_eq!(
            render("{code} {title} {received_at} {name} {channel} {", &v),
            "PA-1 t r n c {"
        );
    }

    #[test]
    fn the_mail_threads_under_the_citizens_and_stops_loops() {
        let cfg = cfg();
        let ack = due();
        let id = message_id(&ack, &cfg);
        assert_eq!(id, "<PA-7K3M-Q2XD.01jabcdef@hue.example.vn>");
        let msg = build(&ack, "citizen@example.com", &cfg, "mail", &id).unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        for h in [
            "Auto-Submitted: auto-replied\r\n",
            "X-Auto-Response-Suppress: All\r\n",
            "X-Phananh-Loop: mail\r\n",
            "In-Reply-To: <abc@example.com>\r\n",
            "References: <abc@example.com>\r\n",
            "Message-ID: <PA-7K3M-Q2XD.01jabcdef@hue.example.vn>\r\n",
        ] {
            assert!(text.contains(h), "{h:?} missing from\n{text}");
        }
        let parsed = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .unwrap();
        assert!(parsed.subject().unwrap().starts_with("[PA-7K3M-Q2XD] "));
        let body = parsed.body_text(0).unwrap();
        assert!(body.contains("Kính gửi Nguyễn Văn A"), "{body}");
        assert!(body.contains("08:15 ngày 26/11/2026"), "{body}");
    }

    #[test]
    fn mail_without_a_message_id_is_not_threaded() {
        let cfg = cfg();
        let mut ack = due();
        ack.external_id = "sha256:00".into();
        let msg = build(&ack, "citizen@example.com", &cfg, "mail", "<x@y>").unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        assert!(!text.contains("In-Reply-To"));
    }
}
