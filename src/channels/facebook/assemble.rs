//! A conversation's fragments → one report draft. Pure: the assembler calls it off the writer,
//! and the writer calls it for a single late fragment.

use super::event::Fragment;
use crate::pipeline::{Draft, phone, text};
use crate::report::{
    Category, CategorySource, Location, LocationSource, Media, OmittedMedia, Reporter,
};

/// Title when a conversation has photos but no words.
const NO_TEXT_TITLE: &str = "Phản ánh qua Facebook (không có nội dung chữ)";

/// `media` and `omitted` are what the assembler downloaded (or could not) for the fragments'
/// attachments.
pub fn draft_from(
    psid: &str,
    fragments: &[Fragment],
    media: Vec<Media>,
    omitted: Vec<OmittedMedia>,
    tz: chrono_tz::Tz,
    default_category: &str,
) -> Draft {
    let mut ordered: Vec<&Fragment> = fragments.iter().collect();
    ordered.sort_by_key(|f| f.timestamp_ms);
    let texts: Vec<&str> = ordered
        .iter()
        .filter_map(|f| f.text.as_deref())
        .filter(|t| !t.trim().is_empty())
        .collect();
    let description = texts.join("\n");
    let title = texts
        .first()
        .map(|t| first_line(t))
        .unwrap_or_else(|| NO_TEXT_TITLE.to_string());
    let location = ordered
        .iter()
        .find_map(|f| f.location)
        .map(|(lat, lon)| (lat, lon, LocationSource::Device))
        .or_else(|| {
            texts
                .iter()
                .find_map(|t| crate::pipeline::place::coordinates_in_text(t))
                .map(|(lat, lon)| (lat, lon, LocationSource::Text))
        })
        .map(|(lat, lon, source)| Location::new(lat, lon, source));
    let submitted_at = ordered
        .first()
        .and_then(|f| chrono::DateTime::from_timestamp_millis(f.timestamp_ms))
        .filter(|t| t.timestamp() > 946_684_800)
        .map(|t| t.with_timezone(&tz).fixed_offset());
    let draft = Draft {
        external_id: ordered
            .first()
            .map(|f| format!("mid:{}", f.mid))
            .unwrap_or_default(),
        submitted_at,
        reporter: Reporter {
            phone: phone::find_phones(&description).into_iter().next(),
            facebook_psid: Some(psid.to_string()),
            ..Reporter::default()
        },
        title,
        description: description.clone(),
        quoted: None,
        full_text: description.clone(),
        language: text::guess_language(&description).to_string(),
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
        cites: crate::tracking::find_codes(&description),
    };
    Draft {
        text_key: draft.dedupe_key(),
        ..draft
    }
}

/// The first line, cut at a word near 120 characters.
fn first_line(t: &str) -> String {
    let line = t.lines().next().unwrap_or_default().trim();
    if line.chars().count() <= 120 {
        return line.to_string();
    }
    let cut: String = line.chars().take(120).collect();
    match cut.rfind(' ') {
        Some(i) if i > 60 => format!("{}…", &cut[..i]),
        _ => format!("{cut}…"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(mid: &str, ts: i64, text: Option<&str>) -> Fragment {
        Fragment {
            mid: mid.into(),
            timestamp_ms: ts,
            text: text.map(str::to_string),
            attachments: vec![],
            location: None,
        }
    }

    #[test]
    fn fragments_in_event_order_make_one_draft_with_the_place_from_text() {
        let tz = chrono_tz::Asia::Ho_Chi_Minh;
        let frags = vec![
            frag(
                "m2",
                1_788_412_208_870,
                Some("vị trí đây ạ: 16.4637, 107.5909"),
            ),
            frag(
                "m1",
                1_788_412_202_977,
                Some("Đường Lê Lợi có ổ gà rất lớn\nxe máy té 2 lần"),
            ),
        ];
        let d = draft_from(
            "7310000000000042",
            &frags,
            vec![],
            vec![],
            tz,
            "chua_phan_loai",
        );
        assert_eq!(d.title, "Đường Lê Lợi có ổ gà rất lớn");
        assert!(d.description.starts_with("Đường Lê Lợi"));
        assert!(d.description.ends_with("107.5909"));
        assert_eq!(d.external_id, "mid:m1");
        let loc = d.location.unwrap();
        assert_eq!(
            (loc.lat, loc.lon, loc.source),
            (16.4637, 107.5909, LocationSource::Text)
        );
        assert_eq!(
            d.reporter.facebook_psid.as_deref(),
            Some("7310000000000042")
        );
        assert!(d.text_key.is_some());
    }
}
