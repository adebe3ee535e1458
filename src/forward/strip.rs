//! Photos leave the centre without their metadata: a citizen's photo carries the phone's GPS
//! position, its make and model and often the owner's name, which the report's own `location`
//! already gives in the measure the sink may see. The stored original is never changed.

/// A copy of `bytes` without EXIF/XMP/IPTC (JPEG APP1/APP13, PNG eXIf and text chunks). Anything
/// that is not a well-formed JPEG or PNG comes back `None`: the caller does not send what it
/// cannot clean.
pub fn strip_metadata(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg(bytes)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        png(bytes)
    } else {
        None
    }
}

fn jpeg(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..2]);
    let mut i = 2;
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while b.get(i) == Some(&0xFF) && b.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if *b.get(i)? != 0xFF {
            return None;
        }
        let marker = *b.get(i + 1)?;
        match marker {
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => {
                out.extend_from_slice(&b[i..i + 2]);
                i += 2;
            }
            // End of image: whatever follows (a second JPEG with its own EXIF, a Motion Photo's
            // video with its GPS track) stays behind.
            0xD9 => {
                out.extend_from_slice(&b[i..i + 2]);
                return Some(out);
            }
            _ => {
                let len = u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]) as usize;
                if len < 2 {
                    return None;
                }
                let end = i.checked_add(2 + len)?;
                let segment = b.get(i..end)?;
                // APP1 (EXIF, XMP), APP13 (IPTC, Photoshop) and comments hold the metadata.
                if !matches!(marker, 0xE1 | 0xED | 0xFE) {
                    out.extend_from_slice(segment);
                }
                i = end;
                if marker == 0xDA {
                    // Entropy-coded data: 0xFF is followed by 0x00 (a stuffed byte) or a restart
                    // marker inside it; any other marker ends the scan (progressive JPEGs have
                    // several).
                    let start = i;
                    loop {
                        let at = i + b.get(i..)?.iter().position(|&x| x == 0xFF)?;
                        let next = *b.get(at + 1)?;
                        if next == 0x00 || (0xD0..=0xD7).contains(&next) {
                            i = at + 2;
                            continue;
                        }
                        out.extend_from_slice(&b[start..at]);
                        i = at;
                        break;
                    }
                }
            }
        }
    }
}

fn png(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..8]);
    let mut i = 8;
    while i < b.len() {
        let len = u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize;
        let end = i.checked_add(12)?.checked_add(len)?;
        let chunk = b.get(i..end)?;
        let kind = &chunk[4..8];
        if !matches!(kind, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME") {
            out.extend_from_slice(chunk);
        }
        i = end;
        if kind == b"IEND" {
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_photo_loses_its_gps_and_still_decodes() {
        let original = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/media/hue-exif.jpg"
        ))
        .unwrap();
        let place = |b: &[u8]| crate::pipeline::place::photo_place(b, chrono_tz::Asia::Ho_Chi_Minh);
        assert!(place(&original).is_some(), "fixture has GPS");
        let clean = strip_metadata(&original).unwrap();
        assert!(clean.len() < original.len());
        assert!(place(&clean).is_none());
        assert!(!clean.windows(4).any(|w| w == b"Exif"));
        let a = image::load_from_memory(&original).unwrap();
        let b = image::load_from_memory(&clean).unwrap();
        assert_eq!(a.to_rgb8().as_raw(), b.to_rgb8().as_raw(), "same pixels");
    }

    #[test]
    fn what_follows_the_end_of_image_and_comments_stay_behind() {
        let original = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/media/hue-exif.jpg"
        ))
        .unwrap();
        let mut tail = original.clone();
        tail.extend_from_slice(b"ftypmp42 GPS track of a motion photo");
        let clean = strip_metadata(&tail).unwrap();
        assert_eq!(clean, strip_metadata(&original).unwrap());
        assert!(clean.ends_with(&[0xFF, 0xD9]));
        // A comment segment right after SOI is dropped.
        let mut commented = vec![0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x07];
        commented.extend_from_slice(b"owner");
        commented.extend_from_slice(&original[2..]);
        assert_eq!(strip_metadata(&commented).unwrap(), clean);
    }

    #[test]
    fn broken_or_unknown_files_are_not_passed_on() {
        assert_eq!(strip_metadata(b"GIF89a..."), None);
        assert_eq!(strip_metadata(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]), None);
        assert_eq!(strip_metadata(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR"), None);
    }
}
