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

#[derive(Debug, Clone, Default)]
pub struct Classifier {
    /// (category code, [(folded phrase with spaces around, weight)]), in config order.
    rules: Vec<(String, Vec<(String, f64)>)>,
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
                    .map(|(p, w)| (format!(" {} ", text::dedupe_key(p)), *w))
                    .filter(|(p, w)| p.trim().len() > 1 && *w > 0.0)
                    .collect();
                (c.code.clone(), phrases)
            })
            .collect();
        Self { rules }
    }

    /// The category the text points to, if any rule matches.
    pub fn classify(&self, text: &str) -> Option<Category> {
        let folded = format!(" {} ", text::dedupe_key(text));
        let mut totals: Vec<(&str, f64)> = self
            .rules
            .iter()
            .map(|(code, phrases)| {
                let total = phrases
                    .iter()
                    .filter(|(p, _)| folded.contains(p.as_str()))
                    .map(|(_, w)| w)
                    .sum::<f64>();
                (code.as_str(), total)
            })
            .filter(|(_, t)| *t > 0.0)
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
        if draft.category.source == CategorySource::Channel {
            return;
        }
        if let Some(c) = self.classify(&format!("{}\n{}", draft.title, draft.description)) {
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
        assert_eq!(got.score, 0.78);
        let got = c
            .classify("Rác thải ùn ứ trên đường Trần Hưng Đạo")
            .unwrap();
        assert_eq!(got.code, "ve_sinh_moi_truong");
        assert!(got.score < 0.7, "a close call: {}", got.score);
        // Whole phrases only: "rác" inside another word does not count.
        assert_eq!(c.classify("Xin cảm ơn"), None);
        assert_eq!(c.classify("thường xuyên"), None);
    }
}
