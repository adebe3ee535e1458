//! Where and when a photo was taken, from its EXIF block.

use chrono::{FixedOffset, NaiveDateTime, TimeZone};
use exif::{In, Reader, Tag, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct PhotoPlace {
    pub lat: f64,
    pub lon: f64,
    /// RFC 3339, in the photo's own offset when it records one, else the configured zone.
    pub taken_at: Option<String>,
}

/// GPS position and capture time of a JPEG/HEIF/PNG/WebP, if it carries them. A photo without EXIF
/// or with a nonsense position (0,0 is a phone that had no fix) gives None: not an error.
pub fn photo_place(bytes: &[u8], tz: chrono_tz::Tz) -> Option<PhotoPlace> {
    // Phones and editors write slightly broken EXIF (a bad next-IFD pointer is common); what could
    // be read is still a good position.
    let exif = Reader::new()
        .continue_on_error(true)
        .read_from_container(&mut std::io::Cursor::new(bytes))
        .or_else(|e| e.distill_partial_result(|_| {}))
        .ok()?;
    let coord = |value: Tag, reference: Tag, negative: &str| -> Option<f64> {
        let field = exif.get_field(value, In::PRIMARY)?;
        let Value::Rational(parts) = &field.value else {
            return None;
        };
        if parts.len() < 3 || parts.iter().any(|r| r.denom == 0) {
            return None;
        }
        let deg = parts[0].to_f64() + parts[1].to_f64() / 60.0 + parts[2].to_f64() / 3600.0;
        let sign = match exif.get_field(reference, In::PRIMARY) {
            Some(f) => match &f.value {
                Value::Ascii(v)
                    if v.first()
                        .is_some_and(|s| s.starts_with(negative.as_bytes())) =>
                {
                    -1.0
                }
                _ => 1.0,
            },
            None => 1.0,
        };
        Some(sign * deg)
    };
    let lat = coord(Tag::GPSLatitude, Tag::GPSLatitudeRef, "S")?;
    let lon = coord(Tag::GPSLongitude, Tag::GPSLongitudeRef, "W")?;
    if !(-90.0..=90.0).contains(&lat)
        || !(-180.0..=180.0).contains(&lon)
        || (lat.abs() < 1e-6 && lon.abs() < 1e-6)
    {
        return None;
    }
    Some(PhotoPlace {
        lat: round6(lat),
        lon: round6(lon),
        taken_at: taken_at(&exif, tz),
    })
}

impl PhotoPlace {
    /// The report's location from this photo.
    pub fn location(self) -> crate::report::Location {
        crate::report::Location {
            taken_at: self.taken_at,
            ..crate::report::Location::new(self.lat, self.lon, crate::report::LocationSource::Exif)
        }
    }
}

fn ascii(exif: &exif::Exif, tag: Tag) -> Option<String> {
    match &exif.get_field(tag, In::PRIMARY)?.value {
        Value::Ascii(v) => v
            .first()
            .map(|b| String::from_utf8_lossy(b).trim().to_string()),
        _ => None,
    }
}

fn taken_at(exif: &exif::Exif, tz: chrono_tz::Tz) -> Option<String> {
    let local = ascii(exif, Tag::DateTimeOriginal).or_else(|| ascii(exif, Tag::DateTime))?;
    let naive = NaiveDateTime::parse_from_str(&local, "%Y:%m:%d %H:%M:%S").ok()?;
    let offset = ascii(exif, Tag::OffsetTimeOriginal)
        .and_then(|o| chrono::DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{o}")).ok())
        .map(|d| *d.offset());
    let at = match offset {
        Some(off) => FixedOffset::from_offset(&off)
            .from_local_datetime(&naive)
            .single()?,
        None => tz.from_local_datetime(&naive).single()?.fixed_offset(),
    };
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_photo_without_exif_has_no_place() {
        assert_eq!(
            photo_place(b"not an image", chrono_tz::Asia::Ho_Chi_Minh),
            None
        );
        let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        assert_eq!(photo_place(&png, chrono_tz::Asia::Ho_Chi_Minh), None);
    }
}

/// Coordinates written in a message: a Google Maps link (`@16.4637,107.5909`, `q=16.46,107.59`,
/// `ll=`/`query=`/`destination=`), or a plain decimal pair with at least four decimals
/// (`16.4637, 107.5909`), as people paste from map apps. The first plausible pair wins.
pub fn coordinates_in_text(text: &str) -> Option<(f64, f64)> {
    static PATTERNS: std::sync::LazyLock<[regex::Regex; 3]> = std::sync::LazyLock::new(|| {
        [
            regex::Regex::new(r"@(-?\d{1,2}\.\d+),(-?\d{1,3}\.\d+)").expect("valid"),
            regex::Regex::new(
                r"[?&](?:q|query|ll|destination)=(-?\d{1,2}\.\d+)(?:,|%2C|%2c)\s*(-?\d{1,3}\.\d+)",
            )
            .expect("valid"),
            // Four decimals at least: Vietnamese writes thousands with dots ("1.500, 2.300 đồng").
            regex::Regex::new(
                r"(?:^|[^\d.])(-?\d{1,2}\.\d{4,})\s*[,;]\s*(-?\d{1,3}\.\d{4,})(?:[^\d.]|$)",
            )
            .expect("valid"),
        ]
    });
    PATTERNS.iter().find_map(|re| {
        re.captures_iter(text).find_map(|c| {
            let lat: f64 = c.get(1)?.as_str().parse().ok()?;
            let lon: f64 = c.get(2)?.as_str().parse().ok()?;
            ((-90.0..=90.0).contains(&lat)
                && (-180.0..=180.0).contains(&lon)
                && (lat, lon) != (0.0, 0.0))
                .then_some((lat, lon))
        })
    })
}

#[cfg(test)]
mod text_coordinates {
    use super::coordinates_in_text as c;

    #[test]
    fn map_links_and_pasted_pairs_are_read() {
        assert_eq!(
            c("https://www.google.com/maps/place/Ch%E1%BB%A3/@16.4721,107.5885,17z"),
            Some((16.4721, 107.5885))
        );
        assert_eq!(
            c("https://maps.google.com/?q=16.4637,107.5909"),
            Some((16.4637, 107.5909))
        );
        assert_eq!(c("vị trí: 16.4637, 107.5909 ạ"), Some((16.4637, 107.5909)));
        assert_eq!(c("giá 1.500, 2.300 đồng"), None);
        assert_eq!(c("giá 1.5000, 2.3000.000 đồng"), None);
        assert_eq!(c("số nhà 12, 34"), None);
        assert_eq!(c("@95.1,107.5"), None);
    }
}
