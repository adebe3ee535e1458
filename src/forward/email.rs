//! The `email` sink: each event as a readable Vietnamese mail, with its photos (metadata
//! stripped), to the address of the report's unit, for agencies that have no system to receive
//! the queue. The Message-ID is made from the event id, so a mail sent twice (at-least-once) is
//! one mail to a client that threads by it.

use super::{Outgoing, SinkError};
use crate::ack::message::raw;
use crate::ack::smtp;
use crate::channels::email::automated::LOOP_HEADER;
use crate::config::EmailSinkSettings;
use crate::media::MediaStore;
use crate::report::{Event, EventType, Report};
use futures::StreamExt;
use lettre::AsyncTransport;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, Message, MultiPart, SinglePart};
use std::fmt::Write;

/// Mails in flight on the relay's pool at once.
const WINDOW: usize = 4;

pub struct EmailSink {
    settings: EmailSinkSettings,
    from: Mailbox,
    /// Built at the first round and again after the relay refused our login, so a fixed
    /// password file is read without a reload.
    transport: std::sync::Mutex<Option<smtp::Transport>>,
    media: MediaStore,
}

impl std::fmt::Debug for EmailSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSink")
            .field("relay", &self.settings.smtp.host)
            .finish_non_exhaustive()
    }
}

/// Whether photos go with the mail, or only their names.
#[derive(Clone, Copy, PartialEq)]
enum Photos {
    Attached,
    Listed,
}

impl EmailSink {
    pub fn new(settings: EmailSinkSettings) -> Result<Self, String> {
        let from = settings.from.parse().map_err(|e| format!("from: {e}"))?;
        Ok(Self {
            media: MediaStore::new(settings.media_dir.clone()),
            from,
            transport: std::sync::Mutex::new(None),
            settings,
        })
    }

    fn transport(&self) -> Result<smtp::Transport, SinkError> {
        let mut t = self.transport.lock().expect("transport lock");
        if let Some(t) = t.as_ref() {
            return Ok(t.clone());
        }
        let built = smtp::transport(&self.settings.smtp)
            .map_err(|e| SinkError::Refused(format!("{e:#}")))?;
        *t = Some(built.clone());
        Ok(built)
    }

    pub async fn deliver(&self, events: &[Outgoing]) -> Vec<Result<(), SinkError>> {
        let transport = match self.transport() {
            Ok(t) => t,
            Err(e) => return vec![Err(e); events.len()],
        };
        let sends: Vec<_> = events.iter().map(|ev| self.send(&transport, ev)).collect();
        futures::stream::iter(sends)
            .buffered(WINDOW)
            .collect()
            .await
    }

    async fn send(&self, transport: &smtp::Transport, ev: &Outgoing) -> Result<(), SinkError> {
        let event: Event = serde_json::from_str(&ev.payload)
            .map_err(|e| SinkError::Permanent(format!("the stored event is unreadable: {e}")))?;
        let to = self.recipient(&event.report)?;
        let message = self.build(&event, to.clone(), Photos::Attached).await?;
        match self.relay(transport, message).await {
            // Too large for the agency's server (552, or 5.3.4): the same mail with the photos
            // named instead of attached still tells them what to do.
            Err(SinkError::Permanent(e)) if e.contains("552") || e.contains("5.3.4") => {
                let lighter = self.build(&event, to, Photos::Listed).await?;
                self.relay(transport, lighter).await
            }
            other => other,
        }
    }

    async fn relay(&self, transport: &smtp::Transport, message: Message) -> Result<(), SinkError> {
        let code = |e: &lettre::transport::smtp::Error| {
            e.status().map(|c| c.to_string()).unwrap_or_default()
        };
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => match transport.test_connection().await {
                Ok(true) => Err(SinkError::Permanent(format!(
                    "relay refused this mail: {}",
                    code(&e)
                ))),
                _ => {
                    *self.transport.lock().expect("transport lock") = None;
                    Err(SinkError::Refused(format!(
                        "relay refused us: {}",
                        code(&e)
                    )))
                }
            },
            Err(e) if e.is_transient() => Err(SinkError::Transient(format!(
                "relay deferred the mail: {}",
                code(&e)
            ))),
            // Connection, TLS and timeouts: the relay, not this mail.
            Err(_) => Err(SinkError::Unavailable(format!(
                "cannot reach the relay {}",
                self.settings.smtp.host
            ))),
        }
    }

    fn recipient(&self, report: &Report) -> Result<Mailbox, SinkError> {
        let address = report
            .unit
            .as_ref()
            .and_then(|u| self.settings.unit_addresses.get(u))
            .or(self.settings.to.as_ref())
            .ok_or_else(|| {
                SinkError::Permanent(format!(
                    "no address for unit {:?}: add it to unit_addresses, or set `to`",
                    report.unit.as_deref().unwrap_or("none")
                ))
            })?;
        address
            .parse()
            .map_err(|e| SinkError::Permanent(format!("the unit's address is unusable: {e}")))
    }

    async fn build(
        &self,
        event: &Event,
        to: Mailbox,
        photos: Photos,
    ) -> Result<Message, SinkError> {
        let r = &event.report;
        let domain = self.from.email.domain().to_string();
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject(event))
            .message_id(Some(format!(
                "<{}@{domain}>",
                event.event_id.to_ascii_lowercase()
            )))
            .raw_header(raw("Auto-Submitted", "auto-generated"))
            .raw_header(raw("X-Auto-Response-Suppress", "All"))
            .raw_header(raw(LOOP_HEADER, &r.channel.name))
            .raw_header(raw("X-Phananh-Event", event.event.as_str()))
            .raw_header(raw("X-Phananh-Tracking-Code", &r.tracking_code));
        let (attachments, left_out) = self.attachments(r, photos).await;
        let text = body(event, &left_out);
        let mut parts = MultiPart::mixed().singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text),
        );
        for a in attachments {
            parts = parts.singlepart(a);
        }
        builder
            .multipart(parts)
            .map_err(|e| SinkError::Permanent(format!("cannot build the mail: {e}")))
    }

    /// The report's photos, cleaned, within `max_attachments_size`; the names of the rest.
    async fn attachments(&self, r: &Report, photos: Photos) -> (Vec<SinglePart>, Vec<String>) {
        let mut parts = Vec::new();
        let mut left_out = Vec::new();
        let mut total = 0u64;
        for (i, m) in r.media.iter().enumerate() {
            let name = m
                .name
                .clone()
                .unwrap_or_else(|| format!("anh-{}.{}", i + 1, extension(&m.content_type)));
            if photos == Photos::Listed || total + m.size > self.settings.max_attachments_size {
                left_out.push(name);
                continue;
            }
            let path = self.media.path(&m.sha256);
            let clean = tokio::task::spawn_blocking(move || {
                std::fs::read(path)
                    .ok()
                    .and_then(|b| super::strip::strip_metadata(&b))
            })
            .await
            .ok()
            .flatten();
            match (clean, ContentType::parse(&m.content_type)) {
                (Some(bytes), Ok(ct)) => {
                    total += bytes.len() as u64;
                    parts.push(Attachment::new(name).body(bytes, ct));
                }
                _ => left_out.push(name),
            }
        }
        (parts, left_out)
    }
}

fn subject(event: &Event) -> String {
    let r = &event.report;
    let title: String = r.title.chars().take(80).collect();
    let what = match event.event {
        EventType::Created => "Phản ánh mới",
        EventType::Updated => "Bổ sung phản ánh",
        EventType::Duplicate => "Phản ánh trùng",
    };
    format!("[{}] {what}: {title}", r.tracking_code).replace(['\r', '\n'], " ")
}

/// The mail text: what an agency's clerk reads to act on the report.
fn body(event: &Event, left_out: &[String]) -> String {
    let r = &event.report;
    let mut t = String::new();
    let _ = writeln!(t, "Mã phản ánh: {}", r.tracking_code);
    match event.event {
        EventType::Created => {}
        EventType::Updated => {
            let _ = writeln!(t, "Người phản ánh đã gửi thêm thông tin cho phản ánh này.");
        }
        EventType::Duplicate => {
            if let Some(d) = &r.duplicate_of {
                let _ = writeln!(
                    t,
                    "Phản ánh này trùng với phản ánh {} (cùng một sự việc, người khác gửi).",
                    d.tracking_code
                );
            }
        }
    }
    let _ = writeln!(t, "Tiêu đề: {}", r.title);
    let _ = writeln!(t, "Lĩnh vực: {}", r.category.code);
    if let Some(u) = &r.unit {
        let _ = writeln!(t, "Đơn vị xử lý: {u}");
    }
    let _ = writeln!(t, "Thời gian gửi: {}", r.submitted_at);
    let _ = writeln!(t, "Thời gian tiếp nhận: {}", r.received_at);
    let _ = writeln!(t, "Kênh: {} ({})", r.channel.name, r.channel.kind);
    if let Some(l) = &r.location {
        let mut place = Vec::new();
        if let Some(a) = &l.address {
            place.push(a.clone());
        }
        if let Some(w) = r.ward.as_ref().map(|w| w.name.clone()).or(l.ward.clone()) {
            place.push(w);
        }
        let _ = writeln!(
            t,
            "Địa điểm: {}{:.5}, {:.5} — https://www.openstreetmap.org/?mlat={:.5}&mlon={:.5}#map=18/{:.5}/{:.5}",
            if place.is_empty() {
                String::new()
            } else {
                format!("{}; ", place.join(", "))
            },
            l.lat,
            l.lon,
            l.lat,
            l.lon,
            l.lat,
            l.lon
        );
    } else if let Some(w) = &r.ward {
        let _ = writeln!(t, "Địa điểm: {}", w.name);
    }
    match &r.reporter {
        Some(p) => {
            let fields: Vec<String> = [
                p.name.as_ref().map(|v| format!("họ tên {v}")),
                p.phone.as_ref().map(|v| format!("điện thoại {v}")),
                p.email.as_ref().map(|v| format!("e-mail {v}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !fields.is_empty() {
                let _ = writeln!(t, "Người phản ánh: {}", fields.join(", "));
            }
        }
        None => {
            let _ = writeln!(
                t,
                "Người phản ánh: không chuyển (thông tin cá nhân được giữ tại Trung tâm)"
            );
        }
    }
    let _ = writeln!(t, "\nNội dung:\n{}", r.description);
    if let Some(u) = &r.update {
        let _ = writeln!(
            t,
            "\nThông tin bổ sung ({}):\n{}",
            u.received_at, u.description
        );
    }
    if !r.related.is_empty() {
        let codes: Vec<&str> = r.related.iter().map(|x| x.tracking_code.as_str()).collect();
        let _ = writeln!(t, "\nPhản ánh liên quan: {}", codes.join(", "));
    }
    if !left_out.is_empty() {
        let _ = writeln!(
            t,
            "\nẢnh không đính kèm (quá lớn hoặc không đọc được), xem tại Trung tâm: {}",
            left_out.join(", ")
        );
    }
    let _ = writeln!(
        t,
        "\n-- \nThư tự động từ hệ thống tiếp nhận phản ánh hiện trường. Khi trả lời, xin giữ mã {} trong tiêu đề.",
        r.tracking_code
    );
    t
}

fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        _ => "bin",
    }
}
