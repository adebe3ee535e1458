//! Perceptual photo hashes: a 64-bit gradient hash, so a photo recompressed and resized (Facebook
//! does both) lands within a few bits of the original, while different photos are 20+ bits apart
//! (measured in ../shared/notes/crates-more.md §2). Decoding is bounded: a hostile image cannot
//! ask for unbounded memory.

use image_hasher::{HashAlg, HasherConfig, ImageHash};

/// The hash of an image file, base64 (as stored in `Media::phash`), or None when it is not an
/// image we decode (JPEG, PNG, WebP) or is too large to decode safely.
pub fn phash(bytes: &[u8]) -> Option<String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(12_000);
    limits.max_image_height = Some(12_000);
    limits.max_alloc = Some(256 * 1024 * 1024);
    reader.limits(limits);
    let img = reader.decode().ok()?;
    let hasher = HasherConfig::new().hash_alg(HashAlg::Gradient).to_hasher();
    Some(hasher.hash_image(&img).to_base64())
}

/// The hash as a number (for indexing), from its base64 form.
pub fn bits(phash: &str) -> Option<u64> {
    let h = ImageHash::<Box<[u8]>>::from_base64(phash).ok()?;
    let bytes = h.as_bytes();
    (bytes.len() == 8).then(|| u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
}

/// Five bands of the hash (13, 13, 13, 13 and 12 bits): two hashes within 4 bits of each other
/// share at least one band exactly, so an index on the bands finds every candidate.
pub fn bands(h: u64) -> [i64; 5] {
    [
        (h >> 51) as i64,
        ((h >> 38) & 0x1fff) as i64,
        ((h >> 25) & 0x1fff) as i64,
        ((h >> 12) & 0x1fff) as i64,
        (h & 0xfff) as i64,
    ]
}

pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recompressed_smaller_copy_is_close_and_bands_find_it() {
        let original = std::fs::read("fixtures/media/hue-exif.jpg").unwrap();
        let img = image::load_from_memory(&original).unwrap();
        let small = img.resize(
            img.width() * 3 / 4,
            img.height() * 3 / 4,
            image::imageops::FilterType::Lanczos3,
        );
        let mut copy = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut copy, 60)
            .encode_image(&small)
            .unwrap();
        let a = bits(&phash(&original).unwrap()).unwrap();
        let b = bits(&phash(&copy).unwrap()).unwrap();
        assert!(distance(a, b) <= 4, "distance {}", distance(a, b));
        let (ba, bb) = (bands(a), bands(b));
        assert!(ba.iter().zip(bb).any(|(x, y)| *x == y));
        assert_eq!(phash(b"not an image"), None);
    }
}
