//! Any JSON feed, read through the channel's `[json]` mapping of JSON pointers: the list of items
//! in a response, each item's fields, and where the next page is.

use super::open311::RawItem;
use crate::config::JsonMapping;
use crate::pipeline::{Draft, phone, text};
use crate::report::Reporter;
use serde_json::Value;

/// The items of a response and how to ask for the next page (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<RawItem>,
    /// A next-page link, or a cursor to send back.
    pub next: Option<String>,
}

pub fn page(body: &[u8], m: &JsonMapping) -> Result<Page, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = v
        .pointer(&m.items)
        .ok_or_else(|| format!("no {:?} in the response", m.items))?
        .as_array()
        .ok_or_else(|| format!("{:?} is not a list", m.items))?;
    // Serialising a parsed value would change the bytes: each item is kept as it serialises
    // again here, which is the best a pointer into a parsed document allows.
    let items = list
        .iter()
        .map(|item| RawItem {
            raw: serde_json::to_vec(item).unwrap_or_default(),
        })
        .collect();
    let next = m
        .next
        .as_deref()
        .or(m.cursor.as_deref())
        .and_then(|p| v.pointer(p))
        .and_then(scalar)
        .filter(|s| !s.is_empty());
    Ok(Page { items, next })
}

/// An item read: its key (id and version), its draft, its photo URLs, and its `created` value.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: String,
    pub draft: Draft,
    pub media_urls: Vec<String>,
    pub created: String,
    /// What the citizen wrote (for the category rules; without the address).
    pub citizen_text: String,
}

pub fn item(
    raw: &[u8],
    m: &JsonMapping,
    tz: chrono_tz::Tz,
    default_category: &str,
) -> Result<Item, String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let get = |p: &Option<String>| -> Option<String> {
        p.as_deref()
            .and_then(|p| v.pointer(p))
            .and_then(scalar)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let id = v
        .pointer(&m.id)
        .and_then(scalar)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("no id at {:?}", m.id))?;
    let created = v
        .pointer(&m.created)
        .and_then(scalar)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("no created time at {:?}", m.created))?;
    let created_at =
        time(&created, tz).ok_or_else(|| format!("created {created:?} is not a time"))?;
    let updated = get(&m.updated);
    let description = text::clean_text(&get(&m.description).unwrap_or_default());
    let title = get(&m.title)
        .map(|t| text::clean_text(&t))
        .or_else(|| description.lines().next().map(str::to_string))
        .filter(|t| !t.is_empty())
        .ok_or("neither a title nor a description")?;
    let category = super::category(
        get(&m.category).and_then(|c| m.categories.get(&c).cloned()),
        default_category,
    );
    let number = |p: &Option<String>| get(p).and_then(|s| s.parse::<f64>().ok());
    let address = get(&m.address).map(|a| text::clean_text(&a));
    let (location, full) = super::place(
        number(&m.latitude),
        number(&m.longitude),
        address,
        &description,
    );
    let reporter = Reporter {
        name: get(&m.reporter_name).map(|n| text::clean_text(&n)),
        phone: get(&m.phone)
            .and_then(|p| phone::normalize_phone(&p))
            .or_else(|| phone::find_phones(&description).into_iter().next()),
        email: get(&m.email).filter(|e| e.contains('@')),
        facebook_psid: None,
        app_user_id: get(&m.app_user_id),
    };
    let media_urls = match m.media.as_deref().and_then(|p| v.pointer(p)) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|x| match (x, m.media_url.as_deref()) {
                (Value::String(s), _) => Some(s.clone()),
                (Value::Object(_), Some(p)) => x.pointer(p).and_then(scalar),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let draft = Draft {
        external_id: format!("json:{id}"),
        submitted_at: Some(created_at),
        reporter,
        title,
        description: full.trim().to_string(),
        quoted: None,
        full_text: full.trim().to_string(),
        language: text::guess_language(&description).to_string(),
        category,
        unit: None,
        location,
        media: Vec::new(),
        omitted_media: Vec::new(),
        text_key: None,
        ward: None,
        signature: None,
        cites: Vec::new(),
    };
    let draft = Draft {
        text_key: draft.dedupe_key(),
        ..draft
    };
    let citizen_text = format!("{}\n{description}", draft.title);
    Ok(Item {
        key: format!("json:{id}@{}", updated.unwrap_or_else(|| created.clone())),
        draft,
        citizen_text,
        media_urls,
        created,
    })
}

/// RFC 3339, else a naive `YYYY-MM-DD HH:MM:SS` in the installation's zone, else epoch seconds.
pub fn time(s: &str, tz: chrono_tz::Tz) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    use chrono::TimeZone;
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t);
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return tz
                .from_local_datetime(&n)
                .single()
                .map(|t| t.fixed_offset());
        }
    }
    let secs: i64 = s.parse().ok()?;
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&tz).fixed_offset())
}

/// A string or a number, as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> JsonMapping {
        toml::from_str(
            r#"
            items = "/data/items"
            id = "/id"
            created = "/created_at"
            updated = "/updated_at"
            title = "/title"
            description = "/content/text"
            category = "/category/code"
            latitude = "/location/lat"
            longitude = "/location/lng"
            address = "/location/address"
            reporter_name = "/user/full_name"
            phone = "/user/phone"
            app_user_id = "/user/id"
            media = "/attachments"
            media_url = "/url"
            cursor = "/paging/next_cursor"
            cursor_param = "cursor"
            [categories]
            "road" = "ha_tang_do_thi"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn nested_fields_are_read_through_the_mapping() {
        let body = br#"{"data":{"items":[{"id":9001,"created_at":"2026-11-26 08:15:00","title":"\u1ed4 g\u00e0",
            "content":{"text":"\u1ed4 g\u00e0 l\u1edbn tr\u01b0\u1edbc s\u1ed1 12 L\u00ea L\u1ee3i"},"category":{"code":"road"},
            "location":{"lat":"16.4637","lng":107.5909,"address":"12 L\u00ea L\u1ee3i"},
            "user":{"id":"u-77","full_name":"Nguy\u1ec5n V\u0103n An","phone":"0914 222 333"},
            "attachments":[{"url":"https://app.example.vn/m/1.jpg"}]}]},"paging":{"next_cursor":"abc"}}"#;
        let m = mapping();
        let p = page(body, &m).unwrap();
        assert_eq!(p.next.as_deref(), Some("abc"));
        let it = item(&p.items[0].raw, &m, chrono_tz::Asia::Ho_Chi_Minh, "x").unwrap();
        assert_eq!(it.key, "json:9001@2026-11-26 08:15:00");
        assert_eq!(it.draft.title, "Ổ gà");
        assert_eq!(it.draft.category.code, "ha_tang_do_thi");
        assert_eq!(it.draft.reporter.phone.as_deref(), Some("+84914222333"));
        assert_eq!(it.draft.reporter.app_user_id.as_deref(), Some("u-77"));
        assert_eq!(
            it.draft.submitted_at.unwrap().to_rfc3339(),
            "2026-11-26T08:15:00+07:00"
        );
        assert_eq!(it.media_urls, ["https://app.example.vn/m/1.jpg"]);
        assert_eq!(it.draft.location.unwrap().lat, 16.4637);
        assert!(
            item(
                br#"{"created_at":"2026-11-26T08:15:00Z"}"#,
                &m,
                chrono_tz::Asia::Ho_Chi_Minh,
                "x"
            )
            .is_err()
        );
    }
}
