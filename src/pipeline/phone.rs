//! Vietnamese phone numbers: normalisation to E.164, extraction from free
//! text, and masking for logs (phone numbers and e-mail addresses are PII).

use std::sync::LazyLock;

use phonenumber::country::Id;
use phonenumber::{Mode, Type};
use regex::Regex;

/// 2018 mobile renumbering (11 → 10 digits): old 3-digit prefix after the
/// trunk 0 → new 2-digit prefix; the last 7 digits were kept. Old signatures,
/// contact lists and forwarded mails still carry the 11-digit forms.
const OLD_MOBILE_PREFIXES: [(&str, &str); 21] = [
    // Viettel
    ("162", "32"),
    ("163", "33"),
    ("164", "34"),
    ("165", "35"),
    ("166", "36"),
    ("167", "37"),
    ("168", "38"),
    ("169", "39"),
    // MobiFone
    ("120", "70"),
    ("121", "79"),
    ("122", "77"),
    ("126", "76"),
    ("128", "78"),
    // VinaPhone
    ("123", "83"),
    ("124", "84"),
    ("125", "85"),
    ("127", "81"),
    ("129", "82"),
    // Vietnamobile
    ("186", "56"),
    ("188", "58"),
    // Gmobile
    ("199", "59"),
];

/// Thừa Thiên Huế's landline area code moved from 054 to 0234 in Feb 2017;
/// the 7-digit subscriber part is unchanged.
const HUE_OLD_AREA: &str = "54";
const HUE_NEW_AREA: &str = "234";

/// One run of digit groups joined by single separators, optionally opened by
/// "+", "(+84)" or a parenthesised area code "(0234)". Boundaries, grouping
/// and digit counts are checked in code because `regex` has no look-around.
static RUN_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\(\+84\)[ .\-]?|\(0\d{2,3}\)[ .\-]?|\+)?\d+(?:[ .\-]\d+)*")
        .expect("static regex")
});

/// Normalises one phone number written in any common Vietnamese format to
/// E.164. Returns `None` for anything that is not a valid personal (mobile or
/// fixed-line) Vietnamese number, or a valid foreign number with explicit
/// country code.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    // Only phone punctuation is tolerated, so "số 12" or a date never gets
    // reinterpreted as a number by the lenient libphonenumber parser.
    if raw.is_empty()
        || !raw
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '.' | '-' | '(' | ')' | '+'))
    {
        return None;
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let explicit_plus = raw.trim_start_matches('(').starts_with('+');
    if raw.matches('+').count() > 1 || (raw.contains('+') && !explicit_plus) {
        return None;
    }

    let (national, with_cc) = if explicit_plus {
        match digits.strip_prefix("84") {
            Some(rest) => (rest, true),
            None => return foreign(&digits),
        }
    } else if let Some(rest) = digits.strip_prefix("0084") {
        (rest, true)
    } else if let Some(rest) = digits.strip_prefix("00") {
        // "00" is Vietnam's international prefix, so it is as explicit as "+".
        return foreign(rest);
    } else if let Some(rest) = digits.strip_prefix('0') {
        (rest, false)
    } else if digits.starts_with("84") && (11..=12).contains(&digits.len()) {
        (&digits[2..], true)
    } else {
        // Spreadsheets drop the leading 0 of national numbers.
        (digits.as_str(), false)
    };
    // "+84 0905 …" is a frequent mix of the international and national forms.
    let national = match national.strip_prefix('0') {
        Some(rest) if with_cc => rest,
        _ => national,
    };
    vietnamese(&modernise(national))
}

/// Rewrites pre-2017/2018 national significant numbers to today's plan.
fn modernise(national: &str) -> String {
    if national.len() == 10 {
        for (old, new) in OLD_MOBILE_PREFIXES {
            if let Some(rest) = national.strip_prefix(old) {
                return format!("{new}{rest}");
            }
        }
    }
    if national.len() == 9
        && let Some(rest) = national.strip_prefix(HUE_OLD_AREA)
    {
        return format!("{HUE_NEW_AREA}{rest}");
    }
    national.to_owned()
}

fn vietnamese(national: &str) -> Option<String> {
    if !(9..=10).contains(&national.len()) {
        return None;
    }
    let n = phonenumber::parse(Some(Id::VN), format!("+84{national}")).ok()?;
    if !phonenumber::is_valid(&n) {
        return None;
    }
    match n.number_type(&phonenumber::metadata::DATABASE) {
        Type::Mobile | Type::FixedLine | Type::FixedLineOrMobile => {
            Some(n.format().mode(Mode::E164).to_string())
        }
        _ => None,
    }
}

fn foreign(digits: &str) -> Option<String> {
    // E.164 caps a full number at 15 digits; 7 is the shortest real one.
    if !(7..=15).contains(&digits.len()) {
        return None;
    }
    let n = phonenumber::parse(None, format!("+{digits}")).ok()?;
    phonenumber::is_valid(&n).then(|| n.format().mode(Mode::E164).to_string())
}

/// A digit group inside a run, with the separator that precedes it.
struct Group {
    start: usize,
    end: usize,
    sep_before: Option<char>,
}

/// Finds every phone number in free text, as E.164, deduplicated, in order of
/// first appearance.
pub fn find_phones(text: &str) -> Vec<String> {
    let mut unique: Vec<String> = Vec::new();
    for (_, e164) in find_phone_spans(text) {
        if !unique.contains(&e164) {
            unique.push(e164);
        }
    }
    unique
}

/// Every phone number in free text with its byte range, in order (repeats included).
pub fn find_phone_spans(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let mut found = Vec::new();
    for m in RUN_RE.find_iter(text) {
        let glued_left = text[..m.start()]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let glued_right = text[m.end()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let groups = split_groups(text, m.start(), m.end());
        scan_run(text, &groups, glued_left, glued_right, &mut found);
    }
    found
}

fn split_groups(text: &str, start: usize, end: usize) -> Vec<Group> {
    let run = &text[start..end];
    let mut groups = Vec::new();
    let mut cur: Option<usize> = None;
    let mut sep: Option<char> = None;
    let mut in_paren = false;
    for (i, c) in run.char_indices() {
        let at = start + i;
        match c {
            '(' => in_paren = true,
            ')' => in_paren = false,
            // Digits and "+" inside a parenthesised prefix belong to the
            // group that the prefix opens.
            _ if in_paren || c == '+' => {
                cur.get_or_insert(at);
            }
            ' ' | '.' | '-' => {
                if let Some(s) = cur.take() {
                    groups.push(Group {
                        start: s,
                        end: at,
                        sep_before: sep,
                    });
                }
                sep = Some(c);
            }
            _ => {
                cur.get_or_insert(at);
            }
        }
    }
    if let Some(s) = cur {
        groups.push(Group {
            start: s,
            end,
            sep_before: sep,
        });
    }
    // The opening "(" is not part of any group but belongs to the number.
    if let Some(first) = groups.first_mut() {
        first.start = start;
    }
    groups
}

/// Splits a run into numbers. Numbers may only begin and end at a space
/// between groups, so "0905 123 456 0914 567 890" yields two numbers while
/// a dotted money amount or a dashed date can never be cut into one.
fn scan_run(
    text: &str,
    groups: &[Group],
    glued_left: bool,
    glued_right: bool,
    found: &mut Vec<(std::ops::Range<usize>, String)>,
) {
    let mut i = 0;
    while i < groups.len() {
        let starts_clean = if i == 0 {
            !glued_left
        } else {
            groups[i].sep_before == Some(' ')
        };
        if !starts_clean {
            i += 1;
            continue;
        }
        // No phone number has more than 15 digits, so longer spans are
        // skipped without parsing; this keeps long digit tables linear.
        let mut last = i;
        let mut digits = 0;
        for (j, g) in groups.iter().enumerate().skip(i) {
            digits += text[g.start..g.end]
                .bytes()
                .filter(u8::is_ascii_digit)
                .count();
            if digits > 16 {
                break;
            }
            last = j;
        }
        let mut hit = None;
        // Longest match first, so "0234 3822 123" is not read as "0234 3822".
        for j in (i..=last).rev() {
            let ends_clean = if j + 1 == groups.len() {
                !glued_right
            } else {
                groups[j + 1].sep_before == Some(' ')
            };
            if !ends_clean {
                continue;
            }
            let candidate = &text[groups[i].start..groups[j].end];
            if let Some(e164) = candidate_to_e164(candidate) {
                hit = Some((j, e164));
                break;
            }
        }
        match hit {
            Some((j, e164)) => {
                found.push((groups[i].start..groups[j].end, e164));
                i = j + 1;
            }
            None => i += 1,
        }
    }
}

/// Applies the free-text digit-count rules before the full validation, so
/// that bare numbers without a trunk 0 or country code (house numbers, ID
/// card numbers, account numbers) are never taken for phones.
fn candidate_to_e164(candidate: &str) -> Option<String> {
    let digits: String = candidate.chars().filter(char::is_ascii_digit).collect();
    let trimmed = candidate.trim_start_matches('(');
    let national_len = if trimmed.starts_with("+84") {
        digits.len().checked_sub(2)?
    } else if trimmed.starts_with('+') {
        return (8..=15)
            .contains(&digits.len())
            .then(|| normalize_phone(candidate))
            .flatten();
    } else if digits.starts_with("0084") {
        digits.len() - 4
    } else if digits.starts_with("00") {
        return None;
    } else if digits.starts_with('0') {
        digits.len() - 1
    } else if digits.starts_with("84") && (11..=12).contains(&digits.len()) {
        digits.len() - 2
    } else {
        return None;
    };
    if !(9..=10).contains(&national_len) {
        return None;
    }
    normalize_phone(candidate)
}

/// The text with every phone number in it replaced by its mask, for sinks that may not receive
/// personal data: a citizen often writes their number into the report itself.
pub fn redact_phones(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, e164) in find_phone_spans(text) {
        out.push_str(&text[last..range.start]);
        out.push_str(&mask_phone(&e164));
        last = range.end;
    }
    out.push_str(&text[last..]);
    out
}

/// Masks a phone number for logs, keeping just enough to tell numbers apart.
pub fn mask_phone(e164: &str) -> String {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    let (prefix, shown) = match digits.strip_prefix("84") {
        Some(national) if e164.starts_with("+84") => (String::new(), format!("0{national}")),
        _ if e164.starts_with('+') => ("+".to_owned(), digits),
        _ => (String::new(), digits),
    };
    let n = shown.len();
    if n <= 4 {
        return format!("{prefix}{}", "*".repeat(n.max(1)));
    }
    format!(
        "{prefix}{}{}{}",
        &shown[..2],
        "*".repeat(n - 4),
        &shown[n - 2..]
    )
}

/// Masks an e-mail address for logs: first character of the local part and
/// of the domain, plus the top-level domain.
pub fn mask_email(addr: &str) -> String {
    let addr = addr.trim();
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return "***".to_owned();
    };
    let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
    let masked_domain = match domain.rsplit_once('.') {
        Some((_, tld)) if !tld.is_empty() => format!("{}***.{tld}", first(domain)),
        _ => format!("{}***", first(domain)),
    };
    format!("{}***@{masked_domain}", first(local))
}

#[cfg(test)]
mod tests {
    #[test]
    fn phone_numbers_in_text_are_redacted_in_place() {
        let t = "SĐT liên hệ: 0905 123 456, hoặc 090.512.3457. Ngày 27/11/2026.";
        assert_eq!(
            super::redact_phones(t),
            "SĐT liên hệ: 09******56, hoặc 09******57. Ngày 27/11/2026."
        );
    }

    use super::*;

    fn norm(s: &str) -> Option<String> {
        normalize_phone(s)
    }

    #[test]
    fn mobile_in_every_common_format() {
        let want = Some("+84905123456".to_owned());
        for raw in [
            "0905123456",
            "0905 123 456",
            "0905.123.456",
            "090-512-3456",
            "090 512 3456",
            "+84 905 123 456",
            "+84905123456",
            "(+84) 905123456",
            "(+84)905.123.456",
            "84905123456",
            "0084 905 123 456",
            "+84 0905 123 456",
            "  0905 123 456 ",
            "905123456",
        ] {
            assert_eq!(norm(raw), want, "{raw}");
        }
    }

    #[test]
    fn hue_landlines_old_and_new() {
        let want = Some("+842343822123".to_owned());
        for raw in [
            "0234 3822 123",
            "0234.3822.123",
            "(0234) 3822 123",
            "+84 234 3822 123",
            "054 3 822 123",
            "0543822123",
            "054.3822.123",
            "84 234 3822 123",
        ] {
            assert_eq!(norm(raw), want, "{raw}");
        }
        assert_eq!(norm("024 3825 1234"), Some("+842438251234".to_owned()));
        assert_eq!(norm("028 3829 1234"), Some("+842838291234".to_owned()));
    }

    #[test]
    fn old_eleven_digit_mobiles_follow_the_2018_table() {
        let cases = [
            // Viettel
            ("0162 567 8945", "+84325678945"),
            ("0163 567 8945", "+84335678945"),
            ("0164 567 8945", "+84345678945"),
            ("0165 567 8945", "+84355678945"),
            ("0166 567 8945", "+84365678945"),
            ("0167 567 8945", "+84375678945"),
            ("0168 567 8945", "+84385678945"),
            ("0169 567 8945", "+84395678945"),
            // MobiFone
            ("0120 567 8945", "+84705678945"),
            ("0121 567 8945", "+84795678945"),
            ("0122 567 8945", "+84775678945"),
            ("0126 567 8945", "+84765678945"),
            ("0128 567 8945", "+84785678945"),
            // VinaPhone
            ("0123 567 8945", "+84835678945"),
            ("0124 567 8945", "+84845678945"),
            ("0125 567 8945", "+84855678945"),
            ("0127 567 8945", "+84815678945"),
            ("0129 567 8945", "+84825678945"),
            // Vietnamobile
            ("0186 567 8945", "+84565678945"),
            ("0188 567 8945", "+84585678945"),
            // Gmobile
            ("0199 567 8945", "+84595678945"),
        ];
        assert_eq!(cases.len(), OLD_MOBILE_PREFIXES.len());
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Some(want), "{raw}");
        }
        assert_eq!(norm("01695678945"), Some("+84395678945".to_owned()));
        assert_eq!(norm("+84 169 567 8945"), Some("+84395678945".to_owned()));
        assert_eq!(norm("84 1695678945"), Some("+84395678945".to_owned()));
    }

    #[test]
    fn current_operator_ranges_are_mobile() {
        for raw in [
            "0961234567", // Viettel
            "0325678945", // Viettel
            "0931234567", // MobiFone
            "0701234567", // MobiFone
            "0911234567", // VinaPhone
            "0888123456", // VinaPhone
            "0921234567", // Vietnamobile
            "0591234567", // Gmobile
        ] {
            let e164 = norm(raw).unwrap_or_else(|| panic!("{raw} rejected"));
            assert_eq!(e164, format!("+84{}", &raw[1..]));
        }
    }

    #[test]
    fn rejects_non_personal_and_malformed_numbers() {
        for raw in [
            "1800 1090",   // toll-free
            "1900 1075",   // premium / hotline
            "19001075",    //
            "113",         // police
            "115",         // ambulance
            "0905 123 45", // too short
            "0905 123 4567",
            "0123 456",
            "",
            "số 12",
            "27/11/2026",
            "0905 123 456 ext 12",
            "0000000000",
            "+84 1800 1090", // toll-free even with the country code
            "+84 1900 1075",
            "0905 123 456 / 0914 567 890",
        ] {
            assert_eq!(norm(raw), None, "{raw}");
        }
    }

    #[test]
    fn foreign_numbers_need_explicit_country_code() {
        assert_eq!(norm("+33 1 42 68 53 00"), Some("+33142685300".to_owned()));
        assert_eq!(norm("+1 650-253-0000"), Some("+16502530000".to_owned()));
        assert_eq!(norm("0033 1 42 68 53 00"), Some("+33142685300".to_owned()));
        // Without "+" a French national number is read as Vietnamese.
        assert_eq!(norm("01 42 68 53 00"), None);
        assert_eq!(norm("+33 12"), None);
    }

    #[test]
    fn finds_numbers_in_a_citizen_message() {
        let text = "Kính gửi Trung tâm, ngày 27/11/2026 lúc 08:15 đường Lê Lợi (trước số 12) \
                    có ổ gà lớn, tôi đã tự bỏ 500.000đ vá tạm, tổng thiệt hại 1.500.000 đồng. \
                    CCCD 046201001234. Liên hệ: 0905.123.456 hoặc (+84) 914 567 890, \
                    gọi lại 0905 123 456 cũng được. Mã bưu chính 530000, ngày 2026-11-27.";
        assert_eq!(find_phones(text), vec!["+84905123456", "+84914567890"]);
    }

    #[test]
    fn finds_old_formats_and_adjacent_numbers() {
        assert_eq!(
            find_phones("ĐT cũ: 0169 567 8945, bàn 054 3 822 123"),
            vec!["+84395678945", "+842343822123"]
        );
        assert_eq!(
            find_phones("sđt 0905123456 0914567890"),
            vec!["+84905123456", "+84914567890"]
        );
        assert_eq!(
            find_phones("gọi 84905123456 hoặc 0084 914 567 890"),
            vec!["+84905123456", "+84914567890"]
        );
        assert_eq!(
            find_phones("Văn phòng: (0234) 3822 123 - di động 090-512-3456."),
            vec!["+842343822123", "+84905123456"]
        );
        assert_eq!(
            find_phones("hotline +33 1 42 68 53 00"),
            vec!["+33142685300"]
        );
    }

    #[test]
    fn ignores_numbers_that_are_not_phones() {
        for text in [
            "ngày 27/11/2026 lúc 08:15",
            "ngày 2026-11-27T08:15:00+07:00",
            "phí 500.000đ, tổng 1.500.000 đồng, 2.000.000 VND",
            "CCCD 046201001234",
            "CCCD: 084201001234",
            "STK 0071001234567 Vietcombank",
            "STK 19035678901234 Techcombank",
            "Mã bưu chính 530000",
            "nhà số 12 kiệt 34 đường Nguyễn Huệ",
            "tổng đài 1900 1075 hoặc 1800 1090, gọi 113",
            "mã đơn PA0905123456",
            "0905123456789",
            "ID 10905123456",
            "0905.123.4567",
        ] {
            assert_eq!(find_phones(text), Vec::<String>::new(), "{text}");
        }
    }

    #[test]
    fn masks_phone_numbers() {
        assert_eq!(mask_phone("+84905123456"), "09******56");
        assert_eq!(mask_phone("+842343822123"), "02*******23");
        assert_eq!(mask_phone("+33142685300"), "+33*******00");
        assert_eq!(mask_phone("113"), "***");
    }

    #[test]
    fn masks_email_addresses() {
        assert_eq!(mask_email("an.nguyen@example.com"), "a***@e***.com");
        assert_eq!(mask_email("lan@hue.gov.vn"), "l***@h***.vn");
        assert_eq!(mask_email("Đức@thư.vn"), "Đ***@t***.vn");
        assert_eq!(mask_email("not-an-address"), "***");
    }
}
