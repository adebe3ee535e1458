//! "The same incident in other words": what two reports from different people must share to be
//! linked. Measured on fixtures/dedupe (156 labelled cross-reporter pairs) before it was written:
//! citizens describing one pothole share few words (Jaccard 0.1–0.45 on syllable shingles), so
//! the text alone cannot tell; what tells is where (the positions, or the house/kiệt numbers and
//! ward names written when there is no position), when, and what kind of problem (the category
//! family, and the problem words of `config/categories.toml`).
//!
//! Everything here is computed by the parser, off the writer thread; the writer only compares.

use super::text;
use serde::{Deserialize, Serialize};

/// What a report contributes to the comparison, stored beside it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// The category family; None when the category is only the default (unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Hashes of the content syllables and syllable pairs, sorted, unique.
    pub shingles: Vec<u32>,
    /// Problem kinds named in the text (`pothole`, `street_light`…), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// House, kiệt and lane numbers written in the text, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numbers: Vec<u16>,
    /// Ward codes named in the text (current names and old ones), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wards: Vec<String>,
}

/// Words citizens write in nearly every report (greetings, pronouns, particles, the centre's
/// own name, the words for street and ward): they say nothing about which incident it is.
const STOP: &str = "kinh gui trung tam giam sat dieu hanh do thi thong minh hue xin chao admin em anh chi \
toi minh cho hoi phan anh nhe a voi va la co bi da dang rat qua nay do thi ma cua nhung cac mot nhieu \
duoc khong roi gi vay oi nha luon lam de nghi giup xu ly som cam on tran trong so dien thoai moi nguoi \
ben o tai tren duoi truoc sau gan khu vuc hien hom sang chieu toi dem luc ai cung con van chua ra vao \
len xuong the nao nhu sao rang chu ne ha hi he nhi tham tro hai ba bon nam bay tam chin muoi cai chiec \
ngay gio lai thay day kia te mo ung nguoi dan uy ban phuong xa duong thanh pho quan huyen ah a oi";

/// Chat abbreviations and Huế words, folded, to the word they stand for.
const EXPAND: &[(&str, &str)] = &[
    ("k", "khong"),
    ("ko", "khong"),
    ("kh", "khong"),
    ("hok", "khong"),
    ("khum", "khong"),
    ("dc", "duoc"),
    ("dk", "duoc"),
    ("j", "gi"),
    ("r", "roi"),
    ("ng", "nguoi"),
    ("p", "phuong"),
    ("f", "phuong"),
    ("q", "quan"),
    ("tp", "thanh pho"),
    ("dg", "duong"),
    ("d", "duong"),
    ("tdp", "to dan pho"),
    ("kdc", "khu dan cu"),
    ("ubnd", "uy ban"),
    ("vs", "voi"),
    ("ntn", "nhu the nao"),
    ("ni", "nay"),
    ("rua", "vay"),
    ("sdt", "so dien thoai"),
    ("mn", "moi nguoi"),
    ("mng", "moi nguoi"),
    ("ad", "admin"),
];

fn stop_words() -> &'static std::collections::HashSet<&'static str> {
    static SET: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
        std::sync::LazyLock::new(|| STOP.split_whitespace().collect());
    &SET
}

/// Folded words with abbreviations written out, of a text whose phone numbers are blanked.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in text::dedupe_key(s).split(' ').filter(|w| !w.is_empty()) {
        let w = EXPAND
            .iter()
            .find(|(k, _)| *k == w)
            .map(|(_, v)| *v)
            .unwrap_or(w);
        for x in w.split(' ') {
            if x.len() >= 6 && x.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            out.push(x.to_string());
        }
    }
    out
}

/// The text with phone numbers blanked: a number is the reporter's (or a hotline quoted in many
/// reports), not the place's.
fn without_phones(s: &str) -> String {
    let mut out = s.to_string();
    for (range, _) in super::phone::find_phone_spans(s).into_iter().rev() {
        out.replace_range(range, " ");
    }
    out
}

/// FNV-1a: stable across builds and machines, since the hashes are stored.
fn hash(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The text's shingles and place numbers, its phone numbers found once for both.
pub fn shingles_and_numbers(s: &str) -> (Vec<u32>, Vec<u16>) {
    let s = without_phones(s);
    (shingles_of(&s), numbers_of(&s))
}

/// Content syllables and adjacent pairs of them, hashed, sorted, unique.
pub fn shingles(s: &str) -> Vec<u32> {
    shingles_of(&without_phones(s))
}

fn shingles_of(s: &str) -> Vec<u32> {
    let stop = stop_words();
    let content: Vec<String> = words(s)
        .into_iter()
        .filter(|w| !stop.contains(w.as_str()))
        .collect();
    let mut out: Vec<u32> = content.iter().map(|w| hash(w)).collect();
    out.extend(
        content
            .windows(2)
            .map(|p| hash(&format!("{} {}", p[0], p[1]))),
    );
    out.sort_unstable();
    out.dedup();
    out
}

/// House, kiệt (lane) and similar numbers: 1–4 digits not followed by a unit of time, money,
/// length or count ("7h", "2 ngày", "50k", "3 xe" are not places).
pub fn numbers(s: &str) -> Vec<u16> {
    numbers_of(&without_phones(s))
}

fn numbers_of(s: &str) -> Vec<u16> {
    static NUM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?:^|[^\d.,:/])(\d+)").expect("static regex")
    });
    const UNITS: &[&str] = &[
        "h", "g", "gio", "phut", "ngay", "thang", "nam", "m", "km", "cm", "kg", "k", "nghin",
        "trieu", "lan", "nguoi", "xe", "con", "cai", "tuan", "p", "ph",
    ];
    let folded = text::fold(s);
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(c) = NUM.captures_at(&folded, at) {
        let m = c.get(1).expect("group");
        at = m.end();
        // "12/10", "7:30", "1.500", "16.4637": a date, a time, an amount, a coordinate. A full
        // stop or comma that ends the sentence or the clause ("số 208.", "số 12, đường …") is
        // not part of the number.
        let mut next = folded[m.end()..].chars();
        let joined = match next.next() {
            Some(':' | '/') => true,
            Some('.' | ',') => next.next().is_some_and(|c| c.is_ascii_digit()),
            _ => false,
        };
        if joined || m.as_str().len() > 4 {
            continue;
        }
        let after = folded[m.end()..].trim_start();
        let unit = after
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("");
        // "7h30", "50k": a unit glued to the number, or after a space.
        let glued = folded[m.end()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic());
        if glued || UNITS.contains(&unit) {
            continue;
        }
        if let Ok(n) = m.as_str().parse::<u16>() {
            out.push(n);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Jaccard and overlap (shared / smaller) averaged: a two-line message inside a long letter
/// about the same thing still scores, and two long letters need a real share.
pub fn text_score(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut shared) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - shared;
    let jaccard = shared as f64 / union as f64;
    let overlap = shared as f64 / a.len().min(b.len()) as f64;
    (jaccard + overlap) / 2.0
}

/// Whether two sorted lists that are both non-empty share nothing: each side names something
/// (a problem, a number, a ward) and they name different ones.
pub fn disjoint<T: Ord>(a: &[T], b: &[T]) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return false,
        }
    }
    true
}

/// Metres between two positions (equirectangular: exact enough within a city).
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    const R: f64 = 6_371_000.0;
    let lat = ((a.0 + b.0) / 2.0).to_radians();
    let dy = (b.0 - a.0).to_radians() * R;
    let dx = (b.1 - a.1).to_radians() * R * lat.cos();
    (dx * dx + dy * dy).sqrt()
}

/// How the writer decides; from `[dedupe]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub window_ms: i64,
    pub distance_m: f64,
    pub score_near: f64,
    pub score: f64,
}

/// One side of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub signature: &'a Signature,
    pub position: Option<(f64, f64)>,
}

/// Why two reports are one incident, with the text score; None if they are not.
pub fn same_incident(a: Side<'_>, b: Side<'_>, policy: &Policy) -> Option<(&'static str, f64)> {
    let (sa, sb) = (a.signature, b.signature);
    // Both name a problem and share one (`disjoint` is false when either names none).
    let same_problem =
        !sa.problems.is_empty() && !sb.problems.is_empty() && !disjoint(&sa.problems, &sb.problems);
    if disjoint(&sa.problems, &sb.problems) {
        return None;
    }
    if let (Some(fa), Some(fb)) = (&sa.family, &sb.family)
        && fa != fb
        && !same_problem
    {
        return None;
    }
    let score = text_score(&sa.shingles, &sb.shingles);
    match (a.position, b.position) {
        (Some(pa), Some(pb)) => (distance_m(pa, pb) <= policy.distance_m
            && score >= policy.score_near)
            .then_some(("nearby_similar", score)),
        // Without both positions the words must carry the place: different house or kiệt
        // numbers, or different wards, are different places.
        _ => (!disjoint(&sa.numbers, &sb.numbers)
            && !disjoint(&sa.wards, &sb.wards)
            && score >= policy.score)
            .then_some(("similar_text", score)),
    }
}

/// Grid cells of about 167 m (0.0015° of latitude): a position's cell and its neighbours hold
/// every position within `distance_m`.
const CELL_DEG: f64 = 0.0015;
const KIND_CELL: i64 = 1 << 48;
/// Min-hashes per report: the chance that two reports sharing a fifth of their shingles share
/// at least one min-hash is 1 - 0.8^8 = 0.83, a third 0.96; candidates are then compared exactly.
pub const MINHASHES: usize = 8;

fn cell_key(lat_idx: i64, lon_idx: i64) -> i64 {
    KIND_CELL | ((lat_idx + (1 << 20)) << 22) | (lon_idx + (1 << 20))
}

fn cell_of(lat: f64, lon: f64) -> (i64, i64) {
    (
        (lat / CELL_DEG).floor() as i64,
        (lon / CELL_DEG).floor() as i64,
    )
}

/// The keys a report is indexed under: its cell (with a position) and its min-hashes, which are
/// told apart by whether the report has a position: two reports with positions are compared only
/// when close, so one with a position never needs another's min-hashes (in a dense area or a
/// templated feed they would be hundreds of candidates).
pub fn keys(signature: &Signature, position: Option<(f64, f64)>) -> Vec<i64> {
    let mut out = minhashes(&signature.shingles, position.is_some());
    if let Some((lat, lon)) = position {
        let (y, x) = cell_of(lat, lon);
        out.push(cell_key(y, x));
    }
    out
}

/// The keys to look under for earlier reports that may be the same incident.
pub fn probe_keys(
    signature: &Signature,
    position: Option<(f64, f64)>,
    distance_m: f64,
) -> Vec<i64> {
    let mut out = minhashes(&signature.shingles, false);
    if position.is_none() {
        out.extend(minhashes(&signature.shingles, true));
    }
    if let Some((lat, lon)) = position {
        // Exactly the cells the square of ± distance around the position touches: 1 to 3 per
        // axis at 150 m, usually 4 in all.
        let dlat = (distance_m / 110_574.0).min(1.0);
        let dlon = (distance_m / (110_574.0 * lat.to_radians().cos().max(0.1))).min(1.0);
        let (y0, x0) = cell_of(lat - dlat, lon - dlon);
        let (y1, x1) = cell_of(lat + dlat, lon + dlon);
        for cy in y0..=y1 {
            for cx in x0..=x1 {
                out.push(cell_key(cy, cx));
            }
        }
    }
    out
}

fn minhashes(shingles: &[u32], positioned: bool) -> Vec<i64> {
    let kind = if positioned { 2 + MINHASHES as i64 } else { 2 };
    if shingles.is_empty() {
        return Vec::new();
    }
    (0..MINHASHES as u64)
        .map(|seed| {
            let min = shingles
                .iter()
                .map(|&s| mix(u64::from(s) ^ (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))))
                .min()
                .expect("not empty");
            ((kind + seed as i64) << 48) | (min & 0xffff_ffff_ffff) as i64
        })
        .collect()
}

/// splitmix64's finaliser: a stable, well-spread permutation of u64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abbreviations_diacritics_and_greetings_do_not_matter() {
        let a = shingles("Kính gửi trung tâm, đường Lê Lợi có ổ gà rất sâu");
        let b = shingles("d le loi co o ga sau lam ad oi");
        assert!(text_score(&a, &b) > 0.6, "{}", text_score(&a, &b));
        let c = shingles("Rác thải ùn ứ ở chợ Đông Ba");
        assert!(text_score(&a, &c) < 0.05);
    }

    #[test]
    fn numbers_are_places_not_times_or_amounts() {
        assert_eq!(numbers("trước số nhà 12 kiệt 45 Nguyễn Huệ"), vec![12, 45]);
        assert_eq!(
            numbers("từ 7h sáng, 2 ngày rồi, mất 50k, 3 xe"),
            Vec::<u16>::new()
        );
        assert_eq!(numbers("gọi 0905 318 442 nhé"), Vec::<u16>::new());
        assert_eq!(numbers("lúc 7h30 ngày 12/10"), Vec::<u16>::new());
        assert_eq!(
            numbers("gần số 208. Trước nhà số 12, đường Lê Lợi"),
            vec![12, 208]
        );
        assert_eq!(numbers("giá 1.500, 16.4637"), Vec::<u16>::new());
    }

    #[test]
    fn the_cells_looked_up_hold_every_position_within_the_distance() {
        let sig = Signature {
            shingles: vec![1],
            ..Signature::default()
        };
        // Points on a ring 149 m around positions at various places in their cells.
        for (lat, lon) in [
            (16.4637, 107.5909),
            (16.46251, 107.58901),
            (16.46399, 107.59149),
        ] {
            let probe = probe_keys(&sig, Some((lat, lon)), 150.0);
            for step in 0..36 {
                let a = f64::from(step) * 10f64.to_radians();
                let (dlat, dlon) = (
                    149.0 * a.cos() / 110_574.0,
                    149.0 * a.sin() / (110_574.0 * lat.to_radians().cos()),
                );
                let other = (lat + dlat, lon + dlon);
                assert!(distance_m((lat, lon), other) < 150.0);
                let key = *keys(&sig, Some(other)).last().unwrap();
                assert!(probe.contains(&key), "{lat},{lon} → {other:?}");
            }
        }
    }

    #[test]
    fn a_problem_named_on_one_side_only_does_not_lift_the_family_rule() {
        let policy = Policy {
            window_ms: 3_600_000,
            distance_m: 150.0,
            score_near: 0.1,
            score: 0.3,
        };
        let pothole = Signature {
            family: Some("ha_tang".into()),
            problems: vec!["o_ga".into()],
            shingles: shingles("ổ gà lớn trước số 12 Lê Lợi"),
            ..Signature::default()
        };
        let food = Signature {
            family: Some("an_toan_thuc_pham".into()),
            shingles: shingles("quán ăn số 12 Lê Lợi bán thực phẩm hết hạn"),
            ..Signature::default()
        };
        let at = Some((16.4637, 107.5909));
        let side = |s| Side {
            signature: s,
            position: at,
        };
        assert_eq!(same_incident(side(&pothole), side(&food), &policy), None);
        assert_eq!(same_incident(side(&food), side(&pothole), &policy), None);
    }

    #[test]
    fn phone_numbers_are_not_words() {
        assert_eq!(shingles("gọi 0905 318 442"), shingles("gọi 0912.777.888"));
    }

    #[test]
    fn distance_in_huế() {
        let d = distance_m((16.4637, 107.5909), (16.4646, 107.5909));
        assert!((d - 100.0).abs() < 1.0, "{d}");
    }
}
