//! Category by rules: each category's keywords (phrases with weights, from config) are matched on
//! folded text (lowercase, no diacritics, đ→d, punctuation as spaces), so "o ga", "Ổ GÀ" and "ổ gà"
//! are one phrase. The category with the highest total wins; its confidence is
//! best / (best + runner-up + 1), so a clear winner with strong phrases scores near 1 and a close
//! call near 0.5. A channel's own category (Open311 service code, an app's category) is never
//! overridden.

use super::Draft;
use super::text;
use crate::config::CategoryConfig;
use crate::report::{Category, CategorySource};

/// A category needs at least this total to be chosen: one weak phrase ("đường") is not enough.
pub const MIN_TOTAL: f64 = 2.0;

/// A phrase with spaces around it, its weight, and whether it is matched folded.
type Phrase = (String, f64, bool);

#[derive(Debug, Clone, Default)]
pub struct Classifier {
    /// (category code, its phrases), in config order.
    rules: Vec<(String, Vec<Phrase>)>,
}

/// Lowercase NFC, punctuation as spaces, diacritics kept: for one-syllable phrases, where folding
/// would merge different words (cống/công, khói/khỏi, lăng/làng).
fn lower(s: &str) -> String {
    text::nfc(s)
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A phrase as it is matched, spaced at both ends, and whether folded. Several syllables are
/// distinctive without their marks ("o ga" is a pothole); one syllable is not, so it keeps them.
pub fn prepare(p: &str) -> (String, bool) {
    let folded = text::dedupe_key(p);
    if folded.contains(' ') {
        (format!(" {folded} "), true)
    } else {
        (format!(" {} ", lower(p)), false)
    }
}

/// A text made ready for phrase matching, once for all the phrases.
pub struct Prepared {
    folded: String,
    lowered: String,
}

impl Prepared {
    pub fn new(text: &str) -> Self {
        Self {
            folded: format!(" {} ", text::dedupe_key(text)),
            lowered: format!(" {} ", lower(text)),
        }
    }

    pub fn has(&self, phrase: &str, folded: bool) -> bool {
        if folded {
            self.folded.contains(phrase)
        } else {
            self.lowered.contains(phrase)
        }
    }
}

impl Classifier {
    pub fn new(categories: &[CategoryConfig]) -> Self {
        let rules = categories
            .iter()
            .filter(|c| !c.keywords.is_empty())
            .map(|c| {
                let phrases = c
                    .keywords
                    .iter()
                    .map(|(p, w)| {
                        let (phrase, folded) = prepare(p);
                        (phrase, *w, folded)
                    })
                    .filter(|(p, w, _)| p.trim().chars().count() > 1 && *w > 0.0)
                    .collect();
                (c.code.clone(), phrases)
            })
            .collect();
        Self { rules }
    }

    /// The category the text points to, if any rule matches.
    pub fn classify(&self, text: &str) -> Option<Category> {
        self.classify_prepared(&Prepared::new(text))
    }

    pub fn classify_prepared(&self, text: &Prepared) -> Option<Category> {
        let mut totals: Vec<(&str, f64)> = self
            .rules
            .iter()
            .map(|(code, phrases)| {
                let total = phrases
                    .iter()
                    .filter(|(p, _, is_folded)| text.has(p, *is_folded))
                    .map(|(_, w, _)| w)
                    .sum::<f64>();
                (code.as_str(), total)
            })
            .filter(|(_, t)| *t >= MIN_TOTAL)
            .collect();
        // Highest total first; on a tie, the category listed first in config.
        totals.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (code, best) = *totals.first()?;
        let second = totals.get(1).map_or(0.0, |t| t.1);
        Some(Category {
            code: code.to_string(),
            source: CategorySource::Rules,
            score: ((best / (best + second + 1.0)) * 100.0).round() / 100.0,
        })
    }

    /// Sets the draft's category from its title and text, unless the channel gave one.
    pub fn apply(&self, draft: &mut Draft) {
        let text = format!("{}\n{}", draft.title, draft.description);
        self.apply_text(draft, &text);
    }

    /// Like `apply`, from the citizen's own words only (a feed adds addresses and staff notes to
    /// the description, which must not decide the category).
    pub fn apply_text(&self, draft: &mut Draft, text: &str) {
        if draft.category.source == CategorySource::Channel {
            return;
        }
        if let Some(c) = self.classify(text) {
            draft.category = c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(code: &str, keywords: &[(&str, f64)]) -> CategoryConfig {
        CategoryConfig {
            code: code.into(),
            name: code.into(),
            unit: None,
            keywords: keywords.iter().map(|(k, w)| (k.to_string(), *w)).collect(),
            family: None,
            problems: Default::default(),
        }
    }

    #[test]
    fn phrases_match_folded_text_and_the_heaviest_wins() {
        let c = Classifier::new(&[
            cat(
                "ha_tang_do_thi",
                &[("ổ gà", 3.0), ("đèn đường", 3.0), ("đường", 0.5)],
            ),
            cat("ve_sinh_moi_truong", &[("rác thải", 3.0), ("xả rác", 3.0)]),
        ]);
        let got = c
            .classify("Duong Le Loi co O GA rat lon, xe may te")
            .unwrap();
        assert_eq!(got.code, "ha_tang_do_thi");
        assert_eq!(got.source, CategorySource::Rules);
        assert_eq!(got.score, 0.75);
        let got = c
            .classify("Rác thải ùn ứ trên đường Trần Hưng Đạo")
            .unwrap();
        assert_eq!(got.code, "ve_sinh_moi_truong");
        // A close call scores low; a tie goes to the category listed first.
        let got = c.classify("Ổ gà đầy rác thải").unwrap();
        assert_eq!(got.code, "ha_tang_do_thi");
        assert_eq!(got.score, 0.43);
        // Whole phrases only, and a weak phrase alone is not enough.
        assert_eq!(c.classify("Xin cảm ơn"), None);
        assert_eq!(c.classify("thường xuyên"), None);
        assert_eq!(c.classify("Đường Lê Lợi"), None);
        // One syllable keeps its marks: "công" (public) is not "cống" (drain).
        let d = Classifier::new(&[cat("ha_tang_do_thi", &[("cống", 2.0)])]);
        assert!(d.classify("Nắp cống vỡ").is_some());
        assert_eq!(d.classify("dịch vụ công"), None);
    }
}
