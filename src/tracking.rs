//! Tracking codes: what a citizen reads aloud on the phone (`PA-7K3M-Q2XD`).
//!
//! The alphabet drops the characters people confuse when reading or typing (0/O, 1/I/L, U/V),
//! codes are random (not derived from ids or counters, so not guessable), and parsing ignores case,
//! spaces and dashes.

use rand::Rng;

/// 30 symbols, no 0 O 1 I L U.
const ALPHABET: &[u8; 30] = b"23456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Eight symbols: 30^8 ≈ 6.6e11 codes (~39 bits), so guessing a live code is hopeless at any rate
/// an HTTP front end would allow, and collisions at a city's volume are rare (checked on insert anyway).
const SYMBOLS: usize = 8;

/// A fresh random code with the given prefix.
pub fn generate(prefix: &str) -> String {
    let mut rng = rand::rng();
    let body: String = (0..SYMBOLS)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}-{}-{}", &body[..4], &body[4..])
}

/// Canonical form of what a person typed ("pa 7k3m q2xd" → "PA-7K3M-Q2XD"), or None if it cannot
/// be a code with this prefix.
pub fn parse(prefix: &str, input: &str) -> Option<String> {
    let compact: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(|c| c.to_uppercase())
        .collect();
    let body = compact.strip_prefix(prefix).unwrap_or(&compact);
    if body.len() != SYMBOLS || !body.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    Some(format!("{prefix}-{}-{}", &body[..4], &body[4..]))
}

/// Every tracking code of any prefix in `text` (a subject, a Message-ID list), canonical and in
/// order. Whether one is ours and live is for the store to say.
pub fn find_codes(text: &str) -> Vec<String> {
    static CODE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?i)\b([A-Z0-9]{1,6})-([2-9A-HJKMNP-TV-Z]{4})-([2-9A-HJKMNP-TV-Z]{4})\b",
        )
        .expect("valid regex")
    });
    let mut out: Vec<String> = Vec::new();
    for c in CODE.captures_iter(text) {
        let code = format!("{}-{}-{}", &c[1], &c[2], &c[3]).to_uppercase();
        if !out.contains(&code) {
            out.push(code);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_found_in_subjects_and_message_ids() {
        assert_eq!(
            super::find_codes(
                "Re: [pa-7k3m-q2xd] Ổ gà; <PA-7K3M-Q2XD.2026@hue.example.vn> <PA-2H6J-W8ZB.1@x>"
            ),
            vec!["PA-7K3M-Q2XD".to_string(), "PA-2H6J-W8ZB".to_string()]
        );
        assert!(super::find_codes("số nhà 12-3456-7890, PA-0000-OOOO").is_empty());
    }

    use super::*;

    #[test]
    fn codes_have_the_documented_shape() {
        for _ in 0..1000 {
            let c = generate("PA");
            assert_eq!(c.len(), 12);
            assert!(c.starts_with("PA-"));
            assert_eq!(&c[7..8], "-");
            assert!(!c[3..].contains(['0', 'O', '1', 'I', 'L', 'U']));
            assert_eq!(parse("PA", &c).as_deref(), Some(c.as_str()));
        }
    }

    #[test]
    fn parsing_ignores_case_spaces_and_dashes() {
        assert_eq!(parse("PA", "pa 7k3m q2xd").as_deref(), Some("PA-7K3M-Q2XD"));
        assert_eq!(parse("PA", "7K3MQ2XD").as_deref(), Some("PA-7K3M-Q2XD"));
        assert_eq!(parse("PA", "PA-7K3M-Q2X"), None);
        assert_eq!(parse("PA", "PA-7K3M-Q2X0"), None);
    }

    #[test]
    fn codes_do_not_repeat_in_practice() {
        let set: std::collections::HashSet<_> = (0..100_000).map(|_| generate("PA")).collect();
        assert!(set.len() > 99_990);
    }
}
