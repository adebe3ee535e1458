//! Open311 GeoReport v2 `requests.json`: a page of service requests, each read into a draft.
//! Items are kept with their exact bytes; one that cannot be read is quarantined alone.

use crate::pipeline::{Draft, phone, text};
use crate::report::Reporter;
use chrono::{DateTime, FixedOffset};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// One item of a page, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RawItem {
    pub raw: Vec<u8>,
}

/// A page: a JSON array of requests (the spec), or an object holding one under
/// `service_requests` or `requests` (servers that wrap it).
pub fn page(body: &[u8]) -> Result<Vec<RawItem>, String> {
    // Serde's untagged enums cannot hold borrowed raw values: look at the first byte instead.
    #[derive(serde::Deserialize)]
    struct Wrapped<'a> {
        #[serde(borrow, alias = "requests")]
        service_requests: Vec<&'a RawValue>,
    }
    let bad = |e: serde_json::Error| format!("not an Open311 page: {e}");
    let items: Vec<&RawValue> = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            serde_json::from_slice::<Wrapped<'_>>(body)
                .map_err(bad)?
                .service_requests
        }
        _ => serde_json::from_slice(body).map_err(bad)?,
    };
    Ok(items
        .into_iter()
        .map(|r| RawItem {
            raw: r.get().as_bytes().to_vec(),
        })
        .collect())
}

/// A request read: the inbox key (id and version), the draft, and the photo URL to fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `open311:<id>@<updated or requested time>`: a request seen again unchanged is a repeat;
    /// changed, it is an update.
    pub key: String,
    pub draft: Draft,
    pub media_url: Option<String>,
    /// What the citizen wrote (for the category rules; without address and status notes).
    pub citizen_text: String,
}

pub fn request(
    raw: &[u8],
    service_codes: &BTreeMap<String, String>,
    tz: chrono_tz::Tz,
    default_category: &str,
) -> Result<Request, String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("an item that is not an object".into());
    }
    let s = |k: &str| -> Option<String> {
        match &v[k] {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let id = s("service_request_id").ok_or_else(|| "no service_request_id".to_string())?;
    let requested =
        date(&s("requested_datetime").ok_or_else(|| "no requested_datetime".to_string())?)?;
    let updated = s("updated_datetime").map(|t| date(&t)).transpose()?;
    let description = text::clean_text(&s("description").unwrap_or_default());
    let service_name = s("service_name").map(|n| text::clean_text(&n));
    let title = description
        .lines()
        .next()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .or(service_name.clone())
        .ok_or_else(|| "neither a description nor a service_name".to_string())?;
    let category = super::category(
        s("service_code").and_then(|c| service_codes.get(&c).cloned()),
        default_category,
    );
    let coord = |k: &str| -> Option<f64> {
        match &v[k] {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    let address = s("address").map(|a| text::clean_text(&a));
    let (location, mut full) = super::place(coord("lat"), coord("long"), address, &description);
    let status = s("status").unwrap_or_default();
    if let Some(notes) = s("status_notes") {
        full.push_str(&format!(
            "\nTrạng thái ({status}): {}",
            text::clean_text(&notes)
        ));
    }
    let version = updated.unwrap_or(requested);
    let draft = Draft {
        external_id: format!("open311:{id}"),
        submitted_at: Some(requested.with_timezone(&tz).fixed_offset()),
        reporter: Reporter {
            phone: phone::find_phones(&description).into_iter().next(),
            ..Reporter::default()
        },
        title,
        description: full.trim().to_string(),
        quoted: None,
        full_text: full.trim().to_string(),
        language: text::guess_language(&description).to_string(),
        category,
        unit: s("agency_responsible"),
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
    Ok(Request {
        // In UTC: the same moment written with another offset is the same version.
        key: format!(
            "open311:{id}@{}",
            version
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        draft,
        media_url: s("media_url"),
        citizen_text: format!("{}\n{description}", service_name.unwrap_or_default()),
    })
}

/// Open311 dates must carry a zone (`Z` or `±hh:mm`); one without is refused, not guessed.
fn date(t: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(t)
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%z"))
        .map_err(|_| format!("date {t:?} is not ISO 8601 with a time zone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reads_into_requests_and_a_bad_item_is_refused_alone() {
        let body = br#"[
          {"service_request_id":"638344","status":"open","service_name":"\u0110\u00e8n \u0111\u01b0\u1eddng","service_code":"001",
           "description":"\u0110\u00e8n \u0111\u01b0\u1eddng h\u1ecfng tr\u00ean \u0111\u01b0\u1eddng L\u00ea L\u1ee3i","requested_datetime":"2026-11-26T08:15:00+07:00",
           "updated_datetime":"2026-11-26T09:00:00+07:00","address":"12 L\u00ea L\u1ee3i, Hu\u1ebf","lat":16.4637,"long":"107.5909",
           "media_url":"https://portal.example.vn/m/1.jpg"},
          {"service_request_id":"638345","requested_datetime":"2026-11-26 08:15"}
        ]"#;
        let items = page(body).unwrap();
        assert_eq!(items.len(), 2);
        let codes = BTreeMap::from([("001".to_string(), "ha_tang_do_thi".to_string())]);
        let r = request(&items[0].raw, &codes, chrono_tz::Asia::Ho_Chi_Minh, "x").unwrap();
        assert_eq!(r.key, "open311:638344@2026-11-26T02:00:00Z");
        assert_eq!(r.draft.title, "Đèn đường hỏng trên đường Lê Lợi");
        assert_eq!(r.draft.category.code, "ha_tang_do_thi");
        let loc = r.draft.location.unwrap();
        assert_eq!((loc.lat, loc.lon), (16.4637, 107.5909));
        assert_eq!(loc.address.as_deref(), Some("12 Lê Lợi, Huế"));
        assert_eq!(
            r.media_url.as_deref(),
            Some("https://portal.example.vn/m/1.jpg")
        );
        let bad = request(&items[1].raw, &codes, chrono_tz::Asia::Ho_Chi_Minh, "x").unwrap_err();
        assert!(bad.contains("time zone"), "{bad}");
        assert!(page(b"[{\"service_request_id\":1},").is_err());
        assert_eq!(page(br#"{"service_requests":[{"a":1}]}"#).unwrap().len(), 1);
    }
}
