//! What every report gets after its channel parsed it, whatever the channel: a category, a
//! position (device or feed, then photo EXIF, then coordinates written in the text) checked
//! against the city's boundary, a ward, the unit it routes to, and what the dedupe compares.

use super::Draft;
use super::classify::{Classifier, Prepared, prepare};
use super::geo::{Area, Wards};
use super::similar::{self, Signature};
use crate::config::{DaemonConfig, RouteConfig};
use crate::report::{CategorySource, Location, LocationSource, WardRef, WardSource};
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Enricher {
    classifier: Classifier,
    families: HashMap<String, String>,
    units: HashMap<String, Option<String>>,
    /// (problem kind, its phrases as matched).
    problems: Vec<(String, Vec<(String, bool)>)>,
    routes: Vec<RouteConfig>,
    boundary: Area,
    wards: Wards,
}

impl Enricher {
    pub fn new(d: &DaemonConfig) -> Self {
        let mut problems: Vec<(String, Vec<(String, bool)>)> = Vec::new();
        for c in &d.categories {
            for (kind, phrases) in &c.problems {
                let prepared = phrases.iter().map(|p| prepare(p));
                match problems.iter_mut().find(|(k, _)| k == kind) {
                    Some((_, list)) => list.extend(prepared),
                    None => problems.push((kind.clone(), prepared.collect())),
                }
            }
        }
        Self {
            classifier: Classifier::new(&d.categories),
            families: d
                .categories
                .iter()
                .map(|c| (c.code.clone(), c.family().to_string()))
                .collect(),
            units: d
                .categories
                .iter()
                .map(|c| (c.code.clone(), c.unit.clone()))
                .collect(),
            problems,
            routes: d.routes.clone(),
            boundary: d.place.boundary.clone(),
            wards: d.place.wards.clone(),
        }
    }

    /// Everything, from the draft's title and text.
    pub fn apply(&self, draft: &mut Draft) {
        let text = format!("{}\n{}", draft.title, draft.description);
        self.apply_text(draft, &text);
    }

    /// Like `apply`, from the citizen's own words only (a feed adds addresses and staff notes to
    /// the description, which must not decide the category).
    pub fn apply_text(&self, draft: &mut Draft, text: &str) {
        let prepared = Prepared::new(text);
        if draft.category.source != CategorySource::Channel
            && let Some(c) = self.classifier.classify_prepared(&prepared)
        {
            draft.category = c;
        }
        let named_wards = self.wards.in_text(text);
        self.place(draft, text, &named_wards);
        if draft.unit.is_none() {
            draft.unit = self.unit(
                &draft.category.code,
                draft.ward.as_ref().map(|w| &w.code[..]),
            );
        }
        let mut wards: Vec<String> = named_wards.iter().map(|w| w.code.clone()).collect();
        wards.sort_unstable();
        wards.dedup();
        let mut problems: Vec<String> = self
            .problems
            .iter()
            .filter(|(_, phrases)| phrases.iter().any(|(p, f)| prepared.has(p, *f)))
            .map(|(k, _)| k.clone())
            .collect();
        problems.sort_unstable();
        let (shingles, numbers) = similar::shingles_and_numbers(text);
        draft.signature = Some(Signature {
            family: self
                .family(&draft.category.code, draft.category.source)
                .map(String::from),
            shingles,
            problems,
            numbers,
            wards,
        });
    }

    /// A category's family; None for the default category (unknown: any family).
    pub fn family(&self, code: &str, source: CategorySource) -> Option<&str> {
        if source == CategorySource::Default {
            return None;
        }
        self.families.get(code).map(String::as_str)
    }

    /// The first route for this category and ward, else the category's own unit.
    pub fn unit(&self, category: &str, ward: Option<&str>) -> Option<String> {
        self.routes
            .iter()
            .find(|r| {
                r.category.as_deref().is_none_or(|c| c == category)
                    && r.ward.as_deref().is_none_or(|w| Some(w) == ward)
            })
            .map(|r| r.unit.clone())
            .or_else(|| self.units.get(category).cloned().flatten())
    }

    fn place(&self, draft: &mut Draft, text: &str, named_wards: &[super::geo::Found]) {
        if draft.location.is_none()
            && let Some((lat, lon)) = super::place::coordinates_in_text(text)
        {
            draft.location = Some(Location::new(lat, lon, LocationSource::Text));
        }
        if let Some(loc) = draft.location.as_mut() {
            loc.outside_city =
                !self.boundary.is_empty() && !self.boundary.contains(loc.lat, loc.lon);
            if let Some(w) = self.wards.at(loc.lat, loc.lon) {
                loc.ward = Some(w.name.clone());
                draft.ward = Some(WardRef {
                    code: w.code,
                    name: w.name,
                    source: WardSource::Polygon,
                });
                return;
            }
        }
        // Named in the text: only when it names one ward (two are two places, or a route).
        if let [w] = named_wards {
            draft.ward = Some(WardRef {
                code: w.code.clone(),
                name: w.name.clone(),
                source: WardSource::Text,
            });
        }
    }
}
