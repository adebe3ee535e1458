//! Pure text functions for inbound Vietnamese reports: Unicode normalisation,
//! cleaning, folding for search and dedupe, subject and reply trimming, and a
//! rough language guess.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// NFC normalisation. Decoded windows-1258 mail yields base letters followed
/// by combining tone marks, and macOS file names and some IMEs produce NFD, so
/// every inbound string goes through here before it is compared or stored.
pub fn nfc(s: &str) -> String {
    // Most input is NFC already (and callers often pass text this module produced): the quick
    // check avoids decomposing and recomposing it again.
    if unicode_normalization::is_nfc_quick(s.chars()) == unicode_normalization::IsNormalized::Yes {
        return s.to_string();
    }
    s.nfc().collect()
}

/// Canonical display/storage form: NFC, LF line endings, plain spaces, no
/// invisible characters, tidy whitespace.
pub fn clean_text(s: &str) -> String {
    let mut mapped = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                mapped.push('\n');
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => mapped.push('\n'),
            '\u{200B}'..='\u{200D}' | '\u{FEFF}' | '\u{2060}' => {}
            // Tab and every Unicode space (NBSP, thin space, ideographic
            // space, …) become a plain space.
            c if c.is_whitespace() => mapped.push(' '),
            c if c.is_control() => {}
            c => mapped.push(c),
        }
    }
    // Composition runs after the removals: an invisible character between a
    // vowel and its tone mark would otherwise block composition.
    let mapped = nfc(&mapped);

    let mut out = String::with_capacity(mapped.len());
    let mut blank_run = 0;
    for line in mapped.split('\n') {
        let mut collapsed = String::with_capacity(line.len());
        for c in line.chars() {
            if !(c == ' ' && collapsed.ends_with(' ')) {
                collapsed.push(c);
            }
        }
        let line = collapsed.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_owned()
}

/// Search/dedupe form: no diacritics, lowercase, single spaces. Lossy on
/// purpose: citizens often type without diacritics, so both sides are folded.
pub fn fold(s: &str) -> String {
    // NFD of any form is the same canonical decomposition: no NFC pass is needed first.
    let stripped = s
        .nfd()
        .filter(|&c| !is_combining_mark(c))
        // đ has no decomposition; Ð/ð (U+00D0/U+00F0) are look-alikes that
        // old web pages and legacy converters put in place of Đ/đ.
        .map(|c| match c {
            'Đ' | 'đ' | 'Ð' | 'ð' => 'd',
            c => c,
        })
        .flat_map(char::to_lowercase)
        .collect::<String>();
    stripped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Key under which two texts count as the same report text: folded, with
/// punctuation and symbols treated as spaces.
pub fn dedupe_key(s: &str) -> String {
    fold(s)
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// One leading subject token: a reply/forward prefix (dropped) or a
/// bracketed tag (kept, since it may carry our tracking code).
static SUBJECT_TOKEN_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*(?:(?P<tag>\[[^\]\n]*\])|(?:re|fwd?|tr|aw|wg|sv|vs|tl|trả\s+lời|tra\s+loi|chuyển\s+tiếp|chuyen\s+tiep)\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：])\s*",
    )
    .expect("static regex")
});

/// Removes any number of leading reply/forward prefixes from a mail subject,
/// also those that follow a leading tag ("[PA-…] Re: …"), keeping the tags.
pub fn strip_subject_prefixes(s: &str) -> String {
    let cleaned = clean_text(s);
    let mut rest = cleaned.as_str();
    let mut tags: Vec<&str> = Vec::new();
    while let Some(caps) = SUBJECT_TOKEN_RE.captures(rest) {
        if let Some(tag) = caps.name("tag") {
            tags.push(tag.as_str());
        }
        rest = &rest[caps.get(0).map_or(0, |m| m.end())..];
    }
    let mut out = tags.join(" ");
    if !rest.is_empty() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(rest);
    }
    clean_text(&out)
}

/// An e-mail body split into what the sender wrote now and everything that
/// was quoted from earlier messages or is a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitBody {
    pub body: String,
    pub quoted: Option<String>,
}

static FORWARD_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:-{2,}\s*(?:forwarded message|(?:thư|tin nhắn)\s+(?:đã\s+|được\s+)?chuyển\s+tiếp)\s*-{2,}|begin forwarded message:|bắt đầu thư (?:được )?chuyển tiếp:)$",
    )
    .expect("static regex")
});

static ORIGINAL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^-{2,}\s*(?:original message|thư gốc)\s*-{2,}$").expect("static regex")
});

static HEADER_FROM_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\*?(?:from|từ)\s*\*?\s*:").expect("static regex"));

static HEADER_SENT_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\*?(?:sent|date|đã gửi|gửi|ngày gửi|ngày)\s*\*?\s*:").expect("static regex")
});

static MOBILE_SIG_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:sent from my \S.*|sent from (?:outlook|yahoo mail|mail for windows)\b.*|get outlook for \S.*|(?:được )?gửi từ (?:iphone|ipad|điện thoại|yahoo mail|outlook)\b.*|(?:được )?gửi từ .{1,40} của tôi\.?)$",
    )
    .expect("static regex")
});

/// Attribution lines are short; a long line ending in "wrote:" is prose.
const MAX_ATTRIBUTION_CHARS: usize = 300;

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

fn is_quote(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

fn is_sig_delimiter(line: &str) -> bool {
    line.trim_end_matches('\r') == "-- " || line.trim_end() == "--"
}

fn is_mobile_sig(line: &str) -> bool {
    let t = line.trim();
    t.chars().count() <= 80 && MOBILE_SIG_RE.is_match(t)
}

fn is_signature_start(line: &str) -> bool {
    is_sig_delimiter(line) || is_mobile_sig(line)
}

/// What the sender wrote themself: the text before the first forwarded-message block. Contact
/// details found after it belong to someone else (the person whose message was forwarded).
pub fn own_text(text: &str) -> &str {
    let lines: Vec<&str> = text.lines().collect();
    let mut offset = 0;
    for (i, line) in lines.iter().enumerate() {
        if is_forward_marker(&lines, i) {
            return &text[..offset];
        }
        offset += line.len() + 1;
    }
    text
}

fn is_forward_marker(lines: &[&str], i: usize) -> bool {
    let t = lines[i].trim();
    if FORWARD_RE.is_match(t) {
        return true;
    }
    // Some clients (Thunderbird, Proton) reuse the reply separator for
    // forwards, telling them apart only by a "Forwarded" line above it.
    ORIGINAL_RE.is_match(t)
        && lines[..i]
            .iter()
            .rev()
            .find(|l| !is_blank(l))
            .is_some_and(|l| l.to_lowercase().contains("forwarded"))
}

/// Number of lines (1 or 2) of a reply attribution starting at `i`.
fn attribution_len(lines: &[&str], i: usize) -> Option<usize> {
    let ends = |s: &str| s.ends_with("wrote:") || s.ends_with("đã viết:");
    let first = nfc(lines[i].trim()).to_lowercase();
    if first.is_empty() || first.chars().count() > MAX_ATTRIBUTION_CHARS {
        return None;
    }
    if first.starts_with("on ") || first.starts_with("vào ") {
        // A real attribution carries a date or an address; this keeps prose
        // such as "On the corner someone wrote:" in the body.
        let plausible = |s: &str| s.contains(|c: char| c.is_ascii_digit() || c == '@');
        if ends(&first) {
            return plausible(&first).then_some(1);
        }
        let next = lines.get(i + 1).map(|l| nfc(l.trim()).to_lowercase())?;
        let joined = format!("{first} {next}");
        return (ends(&joined)
            && plausible(&joined)
            && joined.chars().count() <= MAX_ATTRIBUTION_CHARS)
            .then_some(2);
    }
    // "Nguyễn Văn A <a@b.vn> đã viết:" without a date (Thunderbird setting).
    (ends(&first) && first.contains('@')).then_some(1)
}

fn is_outlook_header(lines: &[&str], i: usize) -> bool {
    let t = nfc(lines[i].trim());
    if ORIGINAL_RE.is_match(&t) {
        return true;
    }
    HEADER_FROM_RE.is_match(&t)
        && lines
            .iter()
            .skip(i + 1)
            .take(4)
            .any(|l| HEADER_SENT_RE.is_match(&nfc(l.trim())))
}

/// After the quote lines that follow an attribution, does the sender's own
/// text continue? Then the reply is interleaved, not a quote at the bottom.
fn continues_after_quote(lines: &[&str], from: usize) -> bool {
    let mut k = from;
    while k < lines.len() && is_blank(lines[k]) {
        k += 1;
    }
    if k >= lines.len() || !is_quote(lines[k]) {
        return false;
    }
    while k < lines.len() && (is_blank(lines[k]) || is_quote(lines[k])) {
        k += 1;
    }
    k < lines.len() && !is_signature_start(lines[k])
}

/// A line of underscores that Outlook puts above its reply header.
fn is_rule(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 5 && t.chars().all(|c| c == '_')
}

/// Separates the newly written part of a plain-text mail body from quoted
/// earlier messages and signatures. Forwarded messages count as content.
pub fn split_reply(text: &str) -> SplitBody {
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = normalised.split('\n').collect();
    let mut body: Vec<&str> = Vec::new();
    let mut quoted: Vec<&str> = Vec::new();
    let mut in_forward = false;
    let mut i = 0;
    let mut cut_at = None;

    while i < lines.len() {
        let line = lines[i];
        if is_forward_marker(&lines, i) {
            in_forward = true;
            body.push(line);
            i += 1;
            continue;
        }
        if is_quote(line) && !in_forward {
            quoted.push(line);
            i += 1;
            continue;
        }
        if is_signature_start(line) {
            // A signature above a forwarded block ends where the forward
            // starts; the forwarded message itself is still content.
            match (i + 1..lines.len()).find(|&k| is_forward_marker(&lines, k)) {
                Some(next) => {
                    quoted.extend_from_slice(&lines[i..next]);
                    i = next;
                    continue;
                }
                None => {
                    cut_at = Some(i);
                    break;
                }
            }
        }
        if let Some(n) = attribution_len(&lines, i) {
            if continues_after_quote(&lines, i + n) {
                quoted.extend_from_slice(&lines[i..i + n]);
                i += n;
                continue;
            }
            cut_at = Some(i);
            break;
        }
        if !in_forward && is_outlook_header(&lines, i) {
            cut_at = Some(i);
            break;
        }
        body.push(line);
        i += 1;
    }

    if let Some(at) = cut_at {
        let mut rest: Vec<&str> = Vec::new();
        while let Some(last) = body.last() {
            if is_blank(last) {
                body.pop();
            } else if is_rule(last) {
                rest.insert(0, last);
                body.pop();
            } else {
                break;
            }
        }
        rest.extend_from_slice(&lines[at..]);
        quoted.extend(rest);
    }

    let body = join_tidy(&body);
    let quoted = join_tidy(&quoted);
    if body.is_empty() {
        return SplitBody {
            body: normalised.trim().to_owned(),
            quoted: None,
        };
    }
    SplitBody {
        body,
        quoted: (!quoted.is_empty()).then_some(quoted),
    }
}

/// Joins lines, dropping the extra blank lines that removed quotes leave.
fn join_tidy(lines: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    for &line in lines {
        if is_blank(line) && out.last().is_none_or(|l| is_blank(l)) {
            continue;
        }
        out.push(line);
    }
    out.join("\n").trim().to_owned()
}

/// Frequent Vietnamese words as they look when typed without diacritics.
const VI_WORDS: &[&str] = &[
    "khong", "duong", "phuong", "nguoi", "duoc", "cua", "tai", "bi", "nay", "rat", "nhieu", "dang",
    "xin", "chao", "nhung", "voi", "nuoc", "ngap", "rac", "roi", "giup", "kiet",
];

const EN_WORDS: &[&str] = &[
    "the", "and", "is", "are", "street", "please", "road", "there", "near", "this", "with", "of",
];

/// Rough language tag for routing: "vi", "en" or "und".
pub fn guess_language(s: &str) -> &'static str {
    let s = nfc(s);
    let vietnamese_letter = |c: char| {
        matches!(
            c,
            'ă' | 'â' | 'đ' | 'ê' | 'ô' | 'ơ' | 'ư' | 'Ă' | 'Â' | 'Đ' | 'Ê' | 'Ô' | 'Ơ' | 'Ư'
        ) || ('\u{1EA0}'..='\u{1EF9}').contains(&c)
    };
    if s.chars().any(vietnamese_letter) {
        return "vi";
    }
    let folded = fold(&s);
    let words: HashSet<&str> = folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let hits = |list: &[&str]| list.iter().filter(|w| words.contains(*w)).count();
    if hits(VI_WORDS) >= 2 {
        "vi"
    } else if hits(EN_WORDS) >= 2 {
        "en"
    } else {
        "und"
    }
}

#[cfg(test)]
mod own_text_tests {
    #[test]
    fn a_forwarded_block_is_not_the_senders_own_text() {
        let t = "Nhờ xem giúp.\n\n---------- Forwarded message ---------\nFrom: A <a@b.c>\n\nSĐT 0905 123 456";
        assert_eq!(super::own_text(t).trim(), "Nhờ xem giúp.");
        assert_eq!(super::own_text("Không chuyển tiếp."), "Không chuyển tiếp.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nfd(s: &str) -> String {
        s.nfd().collect()
    }

    #[test]
    fn nfc_composes_windows_1258_and_nfd_input() {
        let cp1258 = "Huê\u{301} ô\u{309} gà";
        assert_eq!(cp1258.chars().count(), 10);
        let out = nfc(cp1258);
        assert_eq!(out, "Huế ổ gà");
        assert_eq!(out.chars().count(), 8);
        assert_eq!(
            nfc("Thu\u{31B}\u{300}a Thie\u{302}n Hue\u{302}\u{301}"),
            "Thừa Thiên Huế"
        );
        assert_eq!(nfc(&nfd("Phường Phú Xuân")), "Phường Phú Xuân");
    }

    #[test]
    fn clean_text_tidies_whitespace_and_invisible_characters() {
        let raw = "\u{FEFF}  Đường\u{A0}Lê\u{2009}Lợi\tcó   ổ\u{200B} gà   \r\n\r\n\r\n\r\n\
                   Xin\u{0007} xử lý\u{2060} gấp ạ \rCảm ơn\u{3000}\n\n";
        assert_eq!(
            clean_text(raw),
            "Đường Lê Lợi có ổ gà\n\nXin xử lý gấp ạ\nCảm ơn"
        );
        assert_eq!(clean_text("Huê\u{301} ô\u{200B}\u{309} gà"), "Huế ổ gà");
        assert_eq!(clean_text("a\n\nb"), "a\n\nb");
        assert_eq!(clean_text(" \t \n "), "");
    }

    #[test]
    fn fold_strips_diacritics_and_d_stroke() {
        assert_eq!(
            fold("Đường Trần Hưng Đạo, phường Phú Xuân"),
            "duong tran hung dao, phuong phu xuan"
        );
        assert_eq!(
            fold("  Đường Trần Hưng Đạo,\n phường   Phú Xuân, TP. Huế — ổ gà "),
            "duong tran hung dao, phuong phu xuan, tp. hue — o ga"
        );
        assert_eq!(fold("Ðà Nẵng"), "da nang");
        assert_eq!(fold("Huê\u{301} ô\u{309} gà"), "hue o ga");
    }

    #[test]
    fn fold_and_dedupe_key_ignore_normalisation_form() {
        let nfc_text = "Cây xanh đổ chắn đường Hùng Vương, gần cầu Trường Tiền!";
        let nfd_text = nfd(nfc_text);
        assert_ne!(nfc_text, nfd_text);
        assert_eq!(fold(nfc_text), fold(&nfd_text));
        assert_eq!(dedupe_key(nfc_text), dedupe_key(&nfd_text));
        assert_eq!(
            dedupe_key(&nfd_text),
            "cay xanh do chan duong hung vuong gan cau truong tien"
        );
    }

    #[test]
    fn dedupe_key_ignores_case_punctuation_and_spacing() {
        let a = dedupe_key("Ổ gà  LỚN, trên đường Lê Lợi!!");
        let b = dedupe_key("ổ gà lớn trên đường lê lợi");
        assert_eq!(a, b);
        assert_eq!(a, "o ga lon tren duong le loi");
        assert_eq!(dedupe_key("o ga lon tren duong le loi"), a);
        assert_eq!(dedupe_key("Kiệt 12/3 Nguyễn Huệ"), "kiet 12 3 nguyen hue");
    }

    #[test]
    fn strips_reply_and_forward_prefixes() {
        let cases = [
            ("Re: Ổ gà đường Lê Lợi", "Ổ gà đường Lê Lợi"),
            ("RE: RE: Fwd: Ổ gà", "Ổ gà"),
            ("Re[2]: Re(3): Ổ gà", "Ổ gà"),
            ("FW: Fw:Cây đổ", "Cây đổ"),
            ("TR: AW: WG: SV: Vs: Rác thải", "Rác thải"),
            ("TL: Trả lời: Chuyển tiếp: Ngập nước", "Ngập nước"),
            ("TRẢ LỜI: ngập nước", "ngập nước"),
            ("  re :  ngập   nước  ", "ngập nước"),
            ("Re: [PA-7K3M-Q2XD] Ổ gà", "[PA-7K3M-Q2XD] Ổ gà"),
            ("[PA-7K3M-Q2XD] Re: Ổ gà", "[PA-7K3M-Q2XD] Ổ gà"),
            (
                "Tra\u{309} lo\u{31B}\u{300}i: Đèn đường hỏng",
                "Đèn đường hỏng",
            ),
            ("Trường Quốc Học: cây đổ", "Trường Quốc Học: cây đổ"),
            ("Review: đèn hỏng", "Review: đèn hỏng"),
            ("Re:", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(strip_subject_prefixes(raw), want, "{raw}");
        }
    }

    #[test]
    fn split_english_gmail_reply_with_wrapped_attribution() {
        let mail = "Yes, the pothole is still there this morning.\n\
                    \n\
                    On Thu, 26 Nov 2026 at 08:15, Trung tâm phản ánh <phananh@hue.gov.vn>\n\
                    wrote:\n\
                    \n\
                    > Could you send a photo?\n\
                    >\n";
        let out = split_reply(mail);
        assert_eq!(out.body, "Yes, the pothole is still there this morning.");
        let quoted = out.quoted.expect("quoted");
        assert!(quoted.starts_with("On Thu, 26 Nov 2026"), "{quoted}");
        assert!(quoted.ends_with(">"), "{quoted}");

        let one_line =
            "Thanks!\n\nOn Thu, Nov 26, 2026 at 8:15 AM Lan <lan@example.com> wrote:\n> ok";
        let out = split_reply(one_line);
        assert_eq!(out.body, "Thanks!");
        assert_eq!(
            out.quoted.as_deref(),
            Some("On Thu, Nov 26, 2026 at 8:15 AM Lan <lan@example.com> wrote:\n> ok")
        );
    }

    #[test]
    fn split_vietnamese_gmail_reply_with_wrapped_attribution() {
        let mail = "Dạ em gửi thêm ảnh, ổ gà nằm ngay trước cổng trường Quốc Học ạ.\r\n\
                    \r\n\
                    Vào Th 5, 26 thg 11, 2026 vào lúc 08:15 Trung tâm phản ánh <\r\n\
                    phananh@hue.gov.vn> đã viết:\r\n\
                    \r\n\
                    > Anh/chị vui lòng cho biết vị trí cụ thể.\r\n";
        let out = split_reply(mail);
        assert_eq!(
            out.body,
            "Dạ em gửi thêm ảnh, ổ gà nằm ngay trước cổng trường Quốc Học ạ."
        );
        let quoted = out.quoted.expect("quoted");
        assert!(quoted.starts_with("Vào Th 5, 26 thg 11"), "{quoted}");
        assert!(quoted.contains("> Anh/chị vui lòng"), "{quoted}");

        let luc = "Đã xử lý chưa ạ?\n\nVào lúc 08:15 ngày 26/11/2026, Lan đã viết:\nNội dung cũ";
        let out = split_reply(luc);
        assert_eq!(out.body, "Đã xử lý chưa ạ?");
        assert_eq!(
            out.quoted.as_deref(),
            Some("Vào lúc 08:15 ngày 26/11/2026, Lan đã viết:\nNội dung cũ")
        );
    }

    #[test]
    fn split_outlook_replies() {
        let mail = "Cây đã được dọn chưa ạ?\n\
                    \n\
                    ________________________________\n\
                    From: Trung tâm phản ánh <phananh@hue.gov.vn>\n\
                    Sent: Thursday, November 26, 2026 8:15 AM\n\
                    To: Nguyễn Thị Lan <lan@example.com>\n\
                    Subject: RE: Cây đổ đường Hùng Vương\n\
                    \n\
                    Đã tiếp nhận.";
        let out = split_reply(mail);
        assert_eq!(out.body, "Cây đã được dọn chưa ạ?");
        let quoted = out.quoted.expect("quoted");
        assert!(quoted.starts_with("____"), "{quoted}");
        assert!(quoted.ends_with("Đã tiếp nhận."), "{quoted}");

        let vi = "Vẫn chưa sửa.\n\nTừ: Trung tâm\nĐến: Lan\nGửi: Thứ Năm, 26 tháng 11, 2026\nNội dung cũ";
        let out = split_reply(vi);
        assert_eq!(out.body, "Vẫn chưa sửa.");
        assert!(out.quoted.expect("quoted").starts_with("Từ: Trung tâm"));

        let original = "Ok\n-----Original Message-----\nFrom: a\nold";
        assert_eq!(split_reply(original).body, "Ok");
        let goc = "Ok\n-----Thư gốc-----\nold";
        assert_eq!(split_reply(goc).body, "Ok");
    }

    #[test]
    fn from_line_without_sent_header_is_body() {
        let mail = "Từ: nhà số 12 đến ngã tư đều ngập.\nNước sâu 30cm.";
        let out = split_reply(mail);
        assert_eq!(out.body, mail);
        assert_eq!(out.quoted, None);
    }

    #[test]
    fn forwarded_message_stays_in_body() {
        let mail = "Nhờ trung tâm xem giúp phản ánh của mẹ em.\n\
                    \n\
                    ---------- Forwarded message ---------\n\
                    From: Trần Thị Mai <mai@example.com>\n\
                    Date: Thu, 26 Nov 2026 at 07:02\n\
                    Subject: Ngập nước kiệt 12 Nguyễn Huệ\n\
                    To: Nguyễn Văn An <an@example.com>\n\
                    \n\
                    Kiệt 12 Nguyễn Huệ ngập sâu từ tối qua.";
        let out = split_reply(mail);
        assert_eq!(out.body, mail);
        assert_eq!(out.quoted, None);

        let vi = "Chuyển anh chị.\n\n---------- Thư đã chuyển tiếp ---------\nTừ: Mai\nNgày: 26/11/2026\nTiêu đề: Ngập\nĐến: An\n\nNgập sâu.";
        assert_eq!(split_reply(vi).body, vi);

        let apple = "Sent from my iPhone\n\nBegin forwarded message:\n\nFrom: Mai <mai@example.com>\nDate: 26 November 2026 at 07:02:00 GMT+7\nSubject: Đèn đường hỏng\n\nĐèn đường ở cầu Trường Tiền hỏng.";
        let out = split_reply(apple);
        assert!(
            out.body.starts_with("Begin forwarded message:"),
            "{}",
            out.body
        );
        assert!(out.body.ends_with("cầu Trường Tiền hỏng."));
        assert_eq!(out.quoted.as_deref(), Some("Sent from my iPhone"));

        let thunderbird = "FYI\n\nForwarded by Lan:\n-------- Original Message --------\nSubject: Ổ gà\nDate: 26/11/2026\nFrom: Mai\n\nỔ gà to.";
        assert_eq!(split_reply(thunderbird).body, thunderbird);
    }

    #[test]
    fn split_at_signature_delimiter() {
        let mail = "Đèn đường trước nhà số 45 Lê Lợi không sáng 3 đêm nay.\n\
                    \n\
                    -- \n\
                    Nguyễn Văn An\n\
                    ĐT: 0905 123 456";
        let out = split_reply(mail);
        assert_eq!(
            out.body,
            "Đèn đường trước nhà số 45 Lê Lợi không sáng 3 đêm nay."
        );
        assert_eq!(
            out.quoted.as_deref(),
            Some("-- \nNguyễn Văn An\nĐT: 0905 123 456")
        );

        let bare = "Rác chưa thu gom.\n--\nAn";
        assert_eq!(split_reply(bare).body, "Rác chưa thu gom.");
        // A dash used as a bullet is not a delimiter.
        let bullet = "Các điểm:\n- Lê Lợi\n--- hết ---";
        assert_eq!(split_reply(bullet).body, bullet);
    }

    #[test]
    fn split_at_mobile_signatures() {
        for sig in [
            "Gửi từ iPhone của tôi",
            "Được gửi từ iPhone của tôi",
            "Gửi từ điện thoại Samsung",
            "Sent from my iPhone",
            "sent from my Android",
            "Sent from Outlook for Android",
            "Get Outlook for iOS",
            "Sent from Yahoo Mail for iPhone",
        ] {
            let mail = format!("Cây đổ chắn đường Hùng Vương.\n\n{sig}\n");
            let out = split_reply(&mail);
            assert_eq!(out.body, "Cây đổ chắn đường Hùng Vương.", "{sig}");
            assert_eq!(out.quoted.as_deref(), Some(sig), "{sig}");
        }
        let prose = "Tôi gửi từ điện thoại của con tôi vì máy tôi hỏng, mong trung tâm thông cảm.";
        assert_eq!(split_reply(prose).quoted, None);
    }

    #[test]
    fn interleaved_quotes_move_to_quoted() {
        let mail = "Vào 26/11/2026 08:15, Trung tâm <phananh@hue.gov.vn> đã viết:\n\
                    > Vị trí cụ thể ở đâu?\n\
                    \n\
                    Trước cổng trường Quốc Học.\n\
                    \n\
                    > Kích thước ổ gà?\n\
                    > (ước lượng)\n\
                    \n\
                    Khoảng 1 mét, sâu 20cm.";
        let out = split_reply(mail);
        assert_eq!(
            out.body,
            "Trước cổng trường Quốc Học.\n\nKhoảng 1 mét, sâu 20cm."
        );
        assert_eq!(
            out.quoted.as_deref(),
            Some(
                "Vào 26/11/2026 08:15, Trung tâm <phananh@hue.gov.vn> đã viết:\n\
                 > Vị trí cụ thể ở đâu?\n\
                 > Kích thước ổ gà?\n\
                 > (ước lượng)"
            )
        );
    }

    #[test]
    fn quotes_without_attribution_are_separated() {
        let mail =
            "> Ổ gà ở đâu?\nTrước số 12 Lê Lợi.\n> Từ bao giờ?\nHôm qua.\n\n> cũ 1\n>\n> cũ 2\n";
        let out = split_reply(mail);
        assert_eq!(out.body, "Trước số 12 Lê Lợi.\nHôm qua.");
        assert_eq!(
            out.quoted.as_deref(),
            Some("> Ổ gà ở đâu?\n> Từ bao giờ?\n> cũ 1\n>\n> cũ 2")
        );
    }

    #[test]
    fn whole_quote_or_leading_signature_keeps_original() {
        let all_quote = "> Ổ gà đường Lê Lợi\n> đã được vá chưa?\n";
        let out = split_reply(all_quote);
        assert_eq!(out.body, "> Ổ gà đường Lê Lợi\n> đã được vá chưa?");
        assert_eq!(out.quoted, None);

        let sig_first = "-- \nNguyễn Văn An\n0905 123 456";
        let out = split_reply(sig_first);
        assert_eq!(out.body, sig_first);
        assert_eq!(out.quoted, None);

        let plain = "Cống thoát nước bị tắc ở chợ Đông Ba.";
        assert_eq!(
            split_reply(plain),
            SplitBody {
                body: plain.to_owned(),
                quoted: None
            }
        );
    }

    #[test]
    fn guesses_language() {
        assert_eq!(guess_language("Cây đổ chắn đường Hùng Vương"), "vi");
        assert_eq!(guess_language(&nfd("Ngập nước")), "vi");
        assert_eq!(guess_language("duong le loi co o ga, khong ai sua"), "vi");
        assert_eq!(
            guess_language("Please fix the pothole on Le Loi street"),
            "en"
        );
        assert_eq!(guess_language("ok"), "und");
        assert_eq!(guess_language("0905 123 456"), "und");
        assert_eq!(guess_language(""), "und");
    }
}
