//! Meta's webhook bodies, split into one item per event and read into what phananh keeps.
//!
//! The body is split with `RawValue`, so each event's stored bytes are exactly what Meta signed
//! (Vietnamese arrives as `\u` escapes; re-serialising would change them). Reads, deliveries and
//! reactions carry no report content and are dropped at the door.

use crate::pipeline::text;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One event as stored: the page and entry time around the event's own bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub external_id: String,
    pub raw: Vec<u8>,
    /// Set for an event that is kept but refused (an entry for another page): the reason.
    pub refused: Option<String>,
}

#[derive(Deserialize)]
struct Body<'a> {
    object: String,
    #[serde(borrow)]
    entry: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(deserialize_with = "id_string")]
    id: String,
    #[serde(default)]
    time: i64,
    #[serde(borrow, default)]
    messaging: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    standby: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    changes: Vec<&'a RawValue>,
}

/// Page ids arrive as strings, and sometimes as numbers.
fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

/// The stored form of one event (what `Item::raw` holds).
#[derive(Deserialize)]
struct Stored<'a> {
    page_id: String,
    #[allow(dead_code)]
    entry_time: i64,
    #[serde(borrow)]
    event: &'a RawValue,
}

/// Why a whole body was refused after its signature checked out.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadBody(pub String);

/// Splits a signed body into items. Events that are not content (reads, deliveries, reactions)
/// are skipped; an event we cannot read is still kept (its own item, quarantined at intake), so
/// one bad event never costs the others. `page_id` is the channel's page: an entry for another
/// page (one app serving two pages) is kept in quarantine, and the rest of the body goes on.
pub fn split(body: &[u8], page_id: &str) -> Result<Vec<Item>, BadBody> {
    let parsed: Body<'_> = serde_json::from_slice(body)
        .map_err(|e| BadBody(format!("not a webhook body we can read: {e}")))?;
    if parsed.object != "page" {
        return Err(BadBody(format!(
            "object {:?} is not \"page\"",
            parsed.object
        )));
    }
    let mut items = Vec::new();
    for entry in &parsed.entry {
        let refused = (entry.id != page_id)
            .then(|| format!("an event for page {}, not this channel's page", entry.id));
        let wrap = |event: &RawValue| -> Vec<u8> {
            format!(
                "{{\"page_id\":\"{}\",\"entry_time\":{},\"event\":{}}}",
                entry.id,
                entry.time,
                event.get()
            )
            .into_bytes()
        };
        for event in entry.messaging.iter().chain(&entry.standby) {
            if let Some(id) = messaging_id(event) {
                items.push(Item {
                    external_id: id,
                    raw: wrap(event),
                    refused: refused.clone(),
                });
            }
        }
        for change in &entry.changes {
            if let Some(id) = change_id(change) {
                items.push(Item {
                    external_id: id,
                    raw: wrap(change),
                    refused: refused.clone(),
                });
            }
        }
    }
    Ok(items)
}

/// The external id of a stored item (`Item::raw`), the same `split` gave it.
pub fn external_id(raw: &[u8]) -> Option<String> {
    let stored: Stored<'_> = serde_json::from_slice(raw).ok()?;
    let v: serde_json::Value = serde_json::from_str(stored.event.get()).ok()?;
    if v.get("field").is_some() {
        change_id(stored.event)
    } else {
        messaging_id(stored.event)
    }
}

/// A Messenger event's idempotency key, or None for events that are not kept.
fn messaging_id(event: &RawValue) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_str(event.get()) {
        Ok(v) => v,
        Err(_) => return Some(unreadable_id(event)),
    };
    if let Some(m) = v.get("message") {
        return Some(match m.get("mid").and_then(|x| x.as_str()) {
            Some(mid) => format!("mid:{mid}"),
            None => unreadable_id(event),
        });
    }
    if let Some(e) = v.get("message_edit") {
        let mid = e.get("mid").and_then(|x| x.as_str()).unwrap_or_default();
        let n = e.get("num_edit").map(|n| n.to_string()).unwrap_or_default();
        return Some(format!("edit:{mid}:{}", n.trim_matches('"')));
    }
    if let Some(p) = v.get("postback") {
        let mid = p.get("mid").and_then(|x| x.as_str());
        let ts = v.get("timestamp").and_then(|x| x.as_i64()).unwrap_or(0);
        let psid = v
            .pointer("/sender/id")
            .and_then(|x| x.as_str())
            .unwrap_or_default();
        return Some(match mid {
            Some(mid) => format!("postback:{mid}"),
            None => format!("postback:{psid}:{ts}"),
        });
    }
    // read, delivery, reaction, optin, referral...: not report content.
    None
}

/// Feed changes have no id of their own: field, item, verb, the object's id and its time.
fn change_id(change: &RawValue) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_str(change.get()) {
        Ok(v) => v,
        Err(_) => return Some(unreadable_id(change)),
    };
    let field = v.get("field").and_then(|x| x.as_str()).unwrap_or_default();
    let value = v.get("value")?;
    let s = |k: &str| {
        value
            .get(k)
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .unwrap_or_default()
    };
    let item = s("item");
    if field != "feed" || matches!(item.as_str(), "reaction" | "like") {
        return None;
    }
    let object = if value.get("comment_id").is_some() {
        s("comment_id")
    } else {
        s("post_id")
    };
    Some(format!(
        "feed:{item}:{}:{object}:{}",
        s("verb"),
        s("created_time")
    ))
}

fn unreadable_id(event: &RawValue) -> String {
    format!(
        "sha256:{}",
        crate::pipeline::sha256_hex(event.get().as_bytes())
    )
}

/// What one stored event means.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A citizen's message: a fragment of a conversation.
    Fragment { psid: String, fragment: Fragment },
    /// A citizen edited an earlier message.
    Edit {
        psid: String,
        mid: String,
        text: String,
    },
    /// Kept, never a report: our own sends echoed back, staff replies, button presses.
    Other { rule: &'static str },
    /// A feed post or comment.
    Feed(FeedItem),
}

/// A piece of a Messenger conversation, as kept until the conversation is closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fragment {
    pub mid: String,
    /// Meta's event time, milliseconds since the epoch.
    pub timestamp_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// A location pin (from the device); places written in the text are read at assembly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// image, video, audio, file, fallback.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// The comment's id, else the post's: what later edits name.
    pub object_id: String,
    pub item: String,
    pub verb: String,
    pub from_id: Option<String>,
    pub from_name: Option<String>,
    pub message: Option<String>,
    pub photos: Vec<String>,
    pub created_time: i64,
}

/// Reads a stored item (`Item::raw`). `Err` is a reason to quarantine it.
pub fn parse(raw: &[u8]) -> Result<Parsed, String> {
    let stored: Stored<'_> =
        serde_json::from_slice(raw).map_err(|e| format!("not a stored webhook event: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(stored.event.get())
        .map_err(|e| format!("the event is not JSON: {e}"))?;
    if v.get("field").is_some() {
        return feed(&v).ok_or_else(|| "a feed change without a value".to_string());
    }
    let psid = v
        .pointer("/sender/id")
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| x.to_string())
        })
        .ok_or("a Messenger event without sender.id")?;
    let timestamp_ms = v.get("timestamp").and_then(|x| x.as_i64()).unwrap_or(0);
    if let Some(m) = v.get("message") {
        if m.get("is_echo").and_then(|x| x.as_bool()) == Some(true) {
            // Our own sends come back as echoes; a person answering from the page inbox too.
            return Ok(Parsed::Other {
                rule: if m
                    .get("metadata")
                    .and_then(|x| x.as_str())
                    .is_some_and(|s| s.starts_with("phananh:"))
                {
                    "own_echo"
                } else {
                    "staff_reply"
                },
            });
        }
        if psid == stored.page_id {
            return Ok(Parsed::Other { rule: "own_echo" });
        }
        let mid = m
            .get("mid")
            .and_then(|x| x.as_str())
            .ok_or("a message without mid")?
            .to_string();
        let mut text_parts = Vec::new();
        if let Some(t) = m.get("text").and_then(|x| x.as_str()) {
            text_parts.push(t.to_string());
        }
        let mut attachments = Vec::new();
        let mut location = None;
        for a in m
            .get("attachments")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
        {
            let kind = a.get("type").and_then(|x| x.as_str()).unwrap_or("fallback");
            let payload = a.get("payload");
            match kind {
                "location" => {
                    let c = payload.and_then(|p| p.get("coordinates"));
                    let lat = c.and_then(|c| c.get("lat")).and_then(|x| x.as_f64());
                    let lon = c.and_then(|c| c.get("long")).and_then(|x| x.as_f64());
                    if let (Some(lat), Some(lon)) = (lat, lon) {
                        location = Some((lat, lon));
                    }
                }
                // Stickers and the thumbs-up are not content.
                "sticker" => {}
                _ if payload.and_then(|p| p.get("sticker_id")).is_some() => {}
                _ => {
                    let url = payload
                        .and_then(|p| p.get("url"))
                        .and_then(|x| x.as_str())
                        .or_else(|| a.get("URL").and_then(|x| x.as_str()))
                        .map(str::to_string);
                    let title = a
                        .get("title")
                        .or_else(|| payload.and_then(|p| p.get("title")))
                        .and_then(|x| x.as_str())
                        .map(text::clean_text);
                    if kind == "fallback" {
                        // A shared link (often a map): its words and address count as text.
                        let link = a.get("URL").and_then(|x| x.as_str()).or(url.as_deref());
                        text_parts.extend(title.clone());
                        text_parts.extend(link.map(str::to_string));
                    } else {
                        attachments.push(Attachment {
                            kind: kind.to_string(),
                            url,
                            title,
                        });
                    }
                }
            }
        }
        let text = text::clean_text(&text_parts.join("\n"));
        let text = (!text.trim().is_empty()).then_some(text);
        // A sticker or the thumbs-up alone: a reaction, not a report.
        if text.is_none() && attachments.is_empty() && location.is_none() {
            return Ok(Parsed::Other { rule: "empty" });
        }
        return Ok(Parsed::Fragment {
            psid,
            fragment: Fragment {
                mid,
                timestamp_ms,
                text,
                attachments,
                location,
            },
        });
    }
    if let Some(e) = v.get("message_edit") {
        return Ok(Parsed::Edit {
            psid,
            mid: e
                .get("mid")
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string(),
            text: text::clean_text(e.get("text").and_then(|x| x.as_str()).unwrap_or_default()),
        });
    }
    if v.get("postback").is_some() {
        return Ok(Parsed::Other { rule: "postback" });
    }
    Err("an event of a kind phananh does not read".into())
}

fn feed(v: &serde_json::Value) -> Option<Parsed> {
    let value = v.get("value")?;
    let s = |k: &str| value.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let mut photos: Vec<String> = value
        .get("photos")
        .and_then(|x| x.as_array())
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    photos.extend(s("photo"));
    if s("item").as_deref() == Some("photo") {
        photos.extend(s("link"));
    }
    Some(Parsed::Feed(FeedItem {
        object_id: s("comment_id").or_else(|| s("post_id")).unwrap_or_default(),
        item: s("item").unwrap_or_default(),
        verb: s("verb").unwrap_or_default(),
        from_id: value.pointer("/from/id").map(|x| {
            x.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| x.to_string())
        }),
        from_name: value
            .pointer("/from/name")
            .and_then(|x| x.as_str())
            .map(text::clean_text),
        message: s("message").map(|m| text::clean_text(&m)),
        photos,
        created_time: value
            .get("created_time")
            .and_then(|x| x.as_i64())
            .unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("fixtures/facebook/{name}")).unwrap()
    }

    #[test]
    fn a_batch_splits_into_its_content_events_with_their_exact_bytes() {
        let body = fixture("04-batch.json");
        let items = split(&body, "104200000000001").unwrap();
        let ids: Vec<&str> = items.iter().map(|i| i.external_id.as_str()).collect();
        assert_eq!(ids, ["mid:m_B1", "mid:m_B2", "mid:m_Echo2"]);
        // The stored event is the body's own bytes (escapes kept), wrapped with its page.
        let text = String::from_utf8(items[0].raw.clone()).unwrap();
        assert!(text.starts_with(
            r#"{"page_id":"104200000000001","entry_time":1788413000000,"event":{"sender""#
        ));
        assert!(text.contains(r"C\u00e2y xanh \u0111\u1ed5"), "{text}");
        for item in &items {
            assert_eq!(
                external_id(&item.raw).as_deref(),
                Some(item.external_id.as_str())
            );
        }
    }

    #[test]
    fn events_read_into_fragments_edits_and_kept_others() {
        let items = split(&fixture("03-location.json"), "104200000000001").unwrap();
        let Parsed::Fragment { psid, fragment } = parse(&items[0].raw).unwrap() else {
            panic!("a fragment")
        };
        assert_eq!(psid, "7310000000000042");
        assert_eq!(fragment.text.as_deref(), Some("vị trí đây ạ"));
        assert_eq!(fragment.location, Some((16.4637, 107.5909)));
        let photo = split(&fixture("02-photo.json"), "104200000000001").unwrap();
        let Parsed::Fragment { fragment, .. } = parse(&photo[0].raw).unwrap() else {
            panic!("a fragment")
        };
        assert_eq!(fragment.attachments.len(), 1, "the sticker is not content");
        let edit = split(&fixture("07-edit.json"), "104200000000001").unwrap();
        assert_eq!(edit[0].external_id, "edit:m_Xq3LrT0yV2c8Hh1kPzQe4wA7bN:1");
        assert!(matches!(parse(&edit[0].raw), Ok(Parsed::Edit { .. })));
        let echo = split(&fixture("05-echo.json"), "104200000000001").unwrap();
        assert_eq!(parse(&echo[0].raw), Ok(Parsed::Other { rule: "own_echo" }));
    }

    #[test]
    fn another_pages_events_are_refused_and_broken_bodies_whole() {
        let items = split(&fixture("01-text.json"), "999").unwrap();
        assert!(
            items[0]
                .refused
                .as_deref()
                .unwrap()
                .contains("104200000000001")
        );
        assert!(split(b"{\"object\":\"page\",\"entry\":[", "1").is_err());
        assert!(split(b"{\"object\":\"user\",\"entry\":[]}", "1").is_err());
    }
}
