//! One RFC 5322 message → one [`Draft`] and the attachment bytes to keep.

use crate::config::EmailConfig;
use crate::config::units::human_size;
use crate::pipeline::place::photo_place;
use crate::pipeline::{Blob, Draft, phone, sha256_hex, text};
use crate::report::{Category, CategorySource, Location, Media, OmittedMedia, Reporter};
use chrono::{DateTime, FixedOffset};
use mail_parser::{MessageParser, MimeHeaders};
use std::collections::HashSet;

/// Why a message cannot become a report. The raw bytes are quarantined with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Reject(pub String);

/// Titles longer than this are cut at a word boundary; the full text stays in the description.
const MAX_TITLE_CHARS: usize = 160;

/// What a message is, for intake.
#[derive(Debug)]
pub enum Parsed {
    /// A citizen's mail: the report it makes and the attachments to keep.
    Report(Box<Draft>, Vec<Blob>),
    /// Written by a machine (auto-reply, bounce, list, our own mail): stored, never a report,
    /// never answered. `rule` names the signal that matched.
    Automated {
        rule: &'static str,
        external_id: String,
        /// Set when it is a bounce: which message came back, and whether for good.
        bounce: Option<super::Bounce>,
    },
}

/// Classifies, then parses one message: what intake runs for every mail channel.
pub fn parse(
    raw: &[u8],
    limits: &EmailConfig,
    tz: chrono_tz::Tz,
    default_category: &str,
) -> Result<Parsed, Reject> {
    let msg = open(raw, limits)?;
    if let Some(rule) = super::automated::classify(&msg, &limits.own_addresses) {
        return Ok(Parsed::Automated {
            rule,
            external_id: external_id(&msg, raw),
            bounce: super::bounce::bounce(&msg),
        });
    }
    let (draft, blobs) = report(&msg, raw, limits, tz, default_category)?;
    Ok(Parsed::Report(Box::new(draft), blobs))
}

/// The report one message makes, whoever wrote it. `default_category` is what the report gets
/// until rules say better.
pub fn normalize(
    raw: &[u8],
    limits: &EmailConfig,
    tz: chrono_tz::Tz,
    default_category: &str,
) -> Result<(Draft, Vec<Blob>), Reject> {
    let msg = open(raw, limits)?;
    report(&msg, raw, limits, tz, default_category)
}

/// Message-ID, or a hash of the bytes when there is none.
fn external_id(msg: &mail_parser::Message<'_>, raw: &[u8]) -> String {
    match msg.message_id() {
        Some(id) if !id.trim().is_empty() => format!("<{}>", id.trim()),
        _ => format!("sha256:{}", sha256_hex(raw)),
    }
}

fn open<'a>(raw: &'a [u8], limits: &EmailConfig) -> Result<mail_parser::Message<'a>, Reject> {
    if raw.len() as u64 > limits.max_message_size {
        return Err(Reject(format!(
            "message is {}, over max_message_size {}; raw kept, raise the limit and run `phananh quarantine retry`",
            human_size(raw.len() as u64),
            human_size(limits.max_message_size)
        )));
    }
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| Reject("not an e-mail message: no header block could be parsed".into()))?;
    if msg.headers().is_empty() {
        return Err(Reject(
            "not an e-mail message: no header block could be parsed".into(),
        ));
    }
    Ok(msg)
}

fn report(
    msg: &mail_parser::Message<'_>,
    raw: &[u8],
    limits: &EmailConfig,
    tz: chrono_tz::Tz,
    default_category: &str,
) -> Result<(Draft, Vec<Blob>), Reject> {
    let from = msg.from().and_then(|a| a.first());
    let email = from
        .and_then(|a| a.address())
        .map(|a| a.trim().to_string())
        .filter(|a| a.contains('@') && !a.contains(char::is_whitespace))
        .ok_or_else(|| {
            Reject("no sender address: the From header is missing or unreadable".into())
        })?;
    let name = from
        .and_then(|a| a.name())
        .map(text::clean_text)
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(&email));

    let title = msg
        .subject()
        .map(text::strip_subject_prefixes)
        .unwrap_or_default();
    let full_text = text::clean_text(&body_text(msg));
    let split = text::split_reply(&full_text);

    let (media, omitted, blobs, location) = attachments(msg, limits, tz);
    if title.is_empty() && split.body.is_empty() && media.is_empty() && omitted.is_empty() {
        return Err(Reject(
            "empty message: no subject, no text and no attachments".into(),
        ));
    }
    let title = if title.is_empty() {
        first_line(&split.body)
    } else {
        title
    };

    // Only the sender's own words: a number in a forwarded message is the original writer's.
    let phones = phone::find_phones(&format!("{title}\n{}", text::own_text(&split.body)));
    let reporter = Reporter {
        name,
        phone: phones.into_iter().next(),
        email: Some(email),
        ..Reporter::default()
    };

    let external_id = external_id(msg, raw);
    let submitted_at = msg.date().and_then(|d| {
        DateTime::from_timestamp(d.to_timestamp(), 0).map(|t| t.with_timezone(&tz).fixed_offset())
    });
    let language = text::guess_language(&format!("{title}\n{}", split.body)).to_string();

    let draft = Draft {
        external_id,
        submitted_at: submitted_at.filter(plausible),
        reporter,
        title,
        description: split.body,
        quoted: split.quoted,
        full_text,
        language,
        category: Category {
            code: default_category.to_string(),
            source: CategorySource::Default,
            score: 0.0,
        },
        unit: None,
        location,
        media,
        omitted_media: omitted,
        text_key: None,
        ward: None,
        signature: None,
        cites: cited_codes(msg),
    };
    let draft = Draft {
        text_key: draft.dedupe_key(),
        ..draft
    };
    Ok((draft, blobs))
}

/// Tracking codes in the subject and in the ids this message answers (our acknowledgements carry
/// the code in their Message-ID), subject first.
fn cited_codes(msg: &mail_parser::Message<'_>) -> Vec<String> {
    let mut text = msg.subject().unwrap_or_default().to_string();
    for h in ["In-Reply-To", "References"] {
        if let Some(v) = msg.header_raw(h) {
            text.push(' ');
            text.push_str(v);
        }
    }
    crate::tracking::find_codes(&text)
}

/// A Date header from before e-mail reached Vietnam or from the future is a broken clock, not a
/// submission time; received_at is used instead.
fn plausible(t: &DateTime<FixedOffset>) -> bool {
    let now = chrono::Utc::now();
    t.timestamp() > 946_684_800 && *t <= now + chrono::Duration::days(1)
}

/// All text bodies joined (Apple Mail splits a body around inline images). HTML-only mail is
/// converted here rather than by mail-parser's fallback, which glues table cells together
/// ("Điện thoại+84 914…") and so hides phone numbers and field labels.
fn body_text(msg: &mail_parser::Message<'_>) -> String {
    // In mail-parser's model an HTML-only message lists its HTML part as the text body.
    let parts: Vec<String> = (0..msg.text_body_count())
        .filter_map(|i| msg.text_part(i as u32))
        .filter_map(|p| {
            let text = p.text_contents()?;
            Some(if p.is_text_html() {
                html_to_text(text)
            } else {
                text.to_string()
            })
        })
        .collect();
    parts
        .into_iter()
        .filter(|t| !t.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// HTML to text: cell and row ends become separators before mail-parser's converter (which
/// handles entities, scripts and styles) runs.
fn html_to_text(html: &str) -> String {
    static CELL: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"(?i)</t[dh]\s*>").expect("valid regex"));
    static ROW: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)</(tr|li|h[1-6]|table|dd|dt)\s*>|<li[\s>]").expect("valid regex")
    });
    let html = CELL.replace_all(html, "$0: ");
    let html = ROW.replace_all(&html, "<br>$0");
    let text = mail_parser::decoders::html::html_to_text(&html);
    // A cell separator left at a line's end or doubled reads as noise.
    text.lines()
        .map(|l| l.trim().trim_end_matches(':').trim().replace(":  :", ":"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn first_line(body: &str) -> String {
    let line = body
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() <= MAX_TITLE_CHARS {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX_TITLE_CHARS).collect();
    match cut.rfind(' ') {
        Some(i) if i > MAX_TITLE_CHARS / 2 => format!("{}…", &cut[..i]),
        _ => format!("{cut}…"),
    }
}

type Attachments = (Vec<Media>, Vec<OmittedMedia>, Vec<Blob>, Option<Location>);

fn attachments(
    msg: &mail_parser::Message<'_>,
    limits: &EmailConfig,
    tz: chrono_tz::Tz,
) -> Attachments {
    let mut media = Vec::new();
    let mut omitted = Vec::new();
    let mut blobs: Vec<Blob> = Vec::new();
    let mut seen = HashSet::new();
    let mut location = None;
    for part in msg.attachments() {
        let bytes = part.contents();
        let declared = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .map(|s| s.to_ascii_lowercase());
        let name = part
            .attachment_name()
            .map(text::clean_text)
            .filter(|n| !n.is_empty())
            .or_else(|| part.is_message().then(|| "forwarded.eml".to_string()));
        let content_type = infer::get(bytes)
            .map(|t| t.mime_type().to_string())
            .or(declared)
            .unwrap_or_else(|| "application/octet-stream".into());
        let size = bytes.len() as u64;
        if size == 0 {
            continue;
        }
        if size > limits.max_attachment_size || media.len() >= limits.max_attachments {
            let reason = if size > limits.max_attachment_size {
                "too_large"
            } else {
                "too_many"
            };
            omitted.push(OmittedMedia {
                name,
                content_type,
                size,
                reason: reason.into(),
            });
            continue;
        }
        let sha = sha256_hex(bytes);
        if !seen.insert(sha.clone()) {
            continue;
        }
        if location.is_none() && content_type.starts_with("image/") {
            location = photo_place(bytes, tz).map(|p| p.location());
        }
        let phash = content_type
            .starts_with("image/")
            .then(|| crate::pipeline::photo::phash(bytes))
            .flatten();
        media.push(Media {
            sha256: sha.clone(),
            content_type,
            size,
            name,
            phash,
        });
        blobs.push(Blob {
            sha256: sha,
            bytes: bytes.to_vec(),
        });
    }
    (media, omitted, blobs, location)
}
