//! Slice keys: which group of frames a window, a statistic or an alert is about. One type, one text form and one
//! parser, shared by the store (which builds keys), the exporter (labels), alert selectors and the query API.
//!
//! Text form: `global`; `dim=value[,dim=value...]` for label dimensions (`camera_id=cam-3`,
//! `site=lot-7,model_version=v2`); `predicate=NAME` for metric predicates. In values, `\`, `,` and `=` are escaped
//! with a backslash, so a camera id such as `a,b=c` stays one dimension (`camera_id=a\,b\=c`).
//!
//! With a context baseline (`metrics::baseline::ContextSpec`) label-dimension keys end in a context pair,
//! `camera_id=cam-1,context=night`: the slice is still of dimension `camera_id` and of camera `cam-1` (selectors
//! such as `camera_id=*` match it); `context()` says which reference it is judged against.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use framewatch_metrics::baseline::CONTEXT_DIMENSION;

/// The fleet-wide slice.
pub const GLOBAL: &str = "global";
const PREDICATE: &str = "predicate";

/// A slice key in its canonical text form (cheap to clone).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SliceKey(Arc<str>);

/// A parsed slice key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceKind {
    Global,
    /// (dimension, value) pairs, unescaped, in the configured order of the dimension.
    Labels(Vec<(String, String)>),
    Predicate(String),
}

/// Appends `value` to `out` with `\`, `,` and `=` escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Splits `text` at unescaped `sep`; the pieces keep their escapes.
fn split_unescaped(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut escaped = false;
    for c in text.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

/// Builds label-dimension keys into a reused buffer (the store does this per frame, without allocating).
#[derive(Debug)]
pub struct LabelKeyBuilder<'a> {
    out: &'a mut String,
}

impl<'a> LabelKeyBuilder<'a> {
    pub fn new(out: &'a mut String) -> LabelKeyBuilder<'a> {
        out.clear();
        LabelKeyBuilder { out }
    }

    pub fn push(&mut self, dimension: &str, value: &str) {
        if !self.out.is_empty() {
            self.out.push(',');
        }
        self.out.push_str(dimension);
        self.out.push('=');
        escape_into(self.out, value);
    }
}

impl SliceKey {
    pub fn global() -> SliceKey {
        SliceKey(Arc::from(GLOBAL))
    }

    pub fn labels<'p>(pairs: impl IntoIterator<Item = (&'p str, &'p str)>) -> SliceKey {
        let mut s = String::new();
        let mut b = LabelKeyBuilder::new(&mut s);
        for (d, v) in pairs {
            b.push(d, v);
        }
        SliceKey(Arc::from(s))
    }

    pub fn camera(id: &str) -> SliceKey {
        SliceKey::labels([("camera_id", id)])
    }

    pub fn predicate(name: &str) -> SliceKey {
        let mut s = format!("{PREDICATE}=");
        escape_into(&mut s, name);
        SliceKey(Arc::from(s))
    }

    /// Takes a key already in canonical form (built by `LabelKeyBuilder`, or read back from a checkpoint).
    pub fn from_canonical(text: &str) -> SliceKey {
        SliceKey(Arc::from(text))
    }

    /// Parses a key typed by a user or a client (a query's `slice`, a rule's selector); `None` when it is not a
    /// well-formed key.
    pub fn parse(text: &str) -> Option<SliceKey> {
        let key = SliceKey(Arc::from(text));
        match key.kind() {
            SliceKind::Global => Some(key),
            SliceKind::Predicate(name) if !name.is_empty() => Some(key),
            SliceKind::Labels(pairs)
                if !pairs.is_empty() && pairs.iter().all(|(d, v)| valid_dimension(d) && !v.is_empty()) =>
            {
                Some(key)
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_global(&self) -> bool {
        &*self.0 == GLOBAL
    }

    pub fn is_predicate(&self) -> bool {
        self.0.strip_prefix(PREDICATE).is_some_and(|r| r.starts_with('='))
    }

    pub fn kind(&self) -> SliceKind {
        if self.is_global() {
            return SliceKind::Global;
        }
        if self.is_predicate() {
            return SliceKind::Predicate(unescape(&self.0[PREDICATE.len() + 1..]));
        }
        let pairs = split_unescaped(&self.0, ',')
            .into_iter()
            .map(|kv| match split_unescaped(kv, '=').as_slice() {
                [d, v] => (unescape(d), unescape(v)),
                _ => (String::new(), String::new()),
            })
            .collect();
        SliceKind::Labels(pairs)
    }

    /// The dimension this slice belongs to: `global`, `predicate:NAME`, or the label names joined with `+`
    /// (`site+model_version`), as configured in `slices.dimensions`. A context pair is not part of the dimension.
    pub fn dimension(&self) -> String {
        match self.kind() {
            SliceKind::Global => GLOBAL.to_string(),
            SliceKind::Predicate(name) => format!("{PREDICATE}:{name}"),
            SliceKind::Labels(pairs) => {
                label_pairs(&pairs).iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>().join("+")
            }
        }
    }

    /// The camera of a `camera_id=...` slice (with or without a context pair).
    pub fn camera_id(&self) -> Option<String> {
        match self.kind() {
            SliceKind::Labels(pairs) => match label_pairs(&pairs) {
                [(d, v)] if d == "camera_id" => Some(v.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The context value of a context-keyed slice (`camera_id=cam-1,context=night` -> `night`).
    pub fn context(&self) -> Option<String> {
        match self.kind() {
            SliceKind::Labels(mut pairs)
                if pairs.len() > 1 && pairs.last().is_some_and(|p| p.0 == CONTEXT_DIMENSION) =>
            {
                pairs.pop().map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// The slice without its context pair (`camera_id=cam-1,context=night` -> `camera_id=cam-1`); itself when
    /// it has none.
    pub fn without_context(&self) -> SliceKey {
        match framewatch_metrics::baseline::without_context(&self.0) {
            Some(parent) => SliceKey::from_canonical(parent),
            None => self.clone(),
        }
    }
}

/// Label pairs without a trailing context pair (which is only ever appended after at least one label).
fn label_pairs(pairs: &[(String, String)]) -> &[(String, String)] {
    match pairs {
        [rest @ .., (d, _)] if !rest.is_empty() && d == CONTEXT_DIMENSION => rest,
        _ => pairs,
    }
}

fn valid_dimension(d: &str) -> bool {
    !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for SliceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for SliceKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for SliceKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for SliceKey {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for SliceKey {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// Which slices a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceSelector {
    /// `*`: every slice except predicate slices (a predicate slice differs from the baseline by definition).
    AllButPredicates,
    /// `DIM=*` (`camera_id=*`, `site+model_version=*`): every slice of that dimension.
    Dimension(String),
    /// `predicate=*`: every predicate slice.
    AnyPredicate,
    /// `TEXT*`: slices whose key starts with TEXT (`camera_id=lot7-*`).
    Prefix(String),
    /// One slice.
    Exact(SliceKey),
}

impl SliceSelector {
    pub fn parse(text: &str) -> Option<SliceSelector> {
        let text = text.trim();
        if text == "*" {
            return Some(SliceSelector::AllButPredicates);
        }
        if let Some(dim) = text.strip_suffix("=*") {
            if dim == PREDICATE {
                return Some(SliceSelector::AnyPredicate);
            }
            if !dim.is_empty() && dim.split('+').all(valid_dimension) {
                return Some(SliceSelector::Dimension(dim.to_string()));
            }
        }
        if let Some(prefix) = text.strip_suffix('*') {
            return (!prefix.is_empty()).then(|| SliceSelector::Prefix(prefix.to_string()));
        }
        SliceKey::parse(text).map(SliceSelector::Exact)
    }

    pub fn matches(&self, key: &SliceKey) -> bool {
        match self {
            SliceSelector::AllButPredicates => !key.is_predicate(),
            SliceSelector::Dimension(d) => !key.is_predicate() && !key.is_global() && key.dimension() == *d,
            SliceSelector::AnyPredicate => key.is_predicate(),
            SliceSelector::Prefix(p) => key.starts_with(p.as_str()),
            SliceSelector::Exact(k) => k == key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_with_escaping() {
        let k = SliceKey::labels([("site", "lot,7"), ("model_version", "v=2\\b")]);
        assert_eq!(k.as_str(), "site=lot\\,7,model_version=v\\=2\\\\b");
        assert_eq!(
            k.kind(),
            SliceKind::Labels(vec![("site".into(), "lot,7".into()), ("model_version".into(), "v=2\\b".into())])
        );
        assert_eq!(k.dimension(), "site+model_version");
        assert_eq!(SliceKey::parse(k.as_str()), Some(k));
        let c = SliceKey::camera("a,b=c");
        assert_eq!(c.camera_id().as_deref(), Some("a,b=c"));
        assert_eq!(c.dimension(), "camera_id");
        assert_eq!(SliceKey::predicate("dark").kind(), SliceKind::Predicate("dark".into()));
        assert_eq!(SliceKey::predicate("dark").dimension(), "predicate:dark");
        assert_eq!(SliceKey::global().kind(), SliceKind::Global);
        assert_eq!(SliceKey::parse("camera_id"), None);
        assert_eq!(SliceKey::parse("camera_id=a=b"), None);
        assert_eq!(SliceKey::parse("=x"), None);
    }

    #[test]
    fn selectors_match_by_structure() {
        let cam = SliceKey::camera("lot7-1");
        let site = SliceKey::labels([("site", "camera_id=x")]);
        let dark = SliceKey::predicate("dark");
        let g = SliceKey::global();
        let sel = |s: &str| SliceSelector::parse(s).expect(s);
        assert!(sel("*").matches(&cam) && sel("*").matches(&g) && !sel("*").matches(&dark));
        assert!(sel("camera_id=*").matches(&cam));
        assert!(!sel("camera_id=*").matches(&site), "a site value that looks like a camera key is still a site");
        assert!(sel("predicate=*").matches(&dark) && !sel("predicate=*").matches(&cam));
        assert!(sel("camera_id=lot7-*").matches(&cam));
        assert!(sel("predicate=dark").matches(&dark));
        assert!(sel("global").matches(&g) && !sel("global").matches(&cam));
        assert_eq!(SliceSelector::parse("a b"), None);
    }

    #[test]
    fn context_keyed_slices_keep_their_dimension_and_camera() {
        let k = SliceKey::labels([("camera_id", "cam-1"), ("context", "night")]);
        assert_eq!(k.as_str(), framewatch_metrics::baseline::context_key("camera_id=cam-1", "night"));
        assert_eq!(k.dimension(), "camera_id");
        assert_eq!(k.camera_id().as_deref(), Some("cam-1"));
        assert_eq!(k.context().as_deref(), Some("night"));
        assert_eq!(k.without_context(), SliceKey::camera("cam-1"));
        assert_eq!(SliceKey::parse(k.as_str()), Some(k.clone()));
        let sel = |s: &str| SliceSelector::parse(s).expect(s);
        assert!(sel("camera_id=*").matches(&k) && sel("*").matches(&k) && sel("camera_id=cam-1*").matches(&k));
        let site = SliceKey::labels([("site", "lot-7"), ("model_version", "v2"), ("context", "00-06")]);
        assert_eq!(site.dimension(), "site+model_version");
        assert!(sel("site+model_version=*").matches(&site) && !sel("camera_id=*").matches(&site));
        assert_eq!(site.camera_id(), None);
        // a plain key has no context; a label named context alone is not a context pair
        assert_eq!(SliceKey::camera("cam-1").context(), None);
        assert_eq!(SliceKey::labels([("context", "x")]).dimension(), "context");
    }
}
