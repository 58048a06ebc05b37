//! Header edits: `set`, `add` and `remove`, applied in the order written.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::response;
use sluice_proxy::{Flow, Result, Session};

use crate::{RequestFilter, ResponseFilter};

/// One edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace all values with this one.
    Set(HeaderName, HeaderValue),
    /// Append a value.
    Add(HeaderName, HeaderValue),
    /// Remove the header.
    Remove(HeaderName),
}

/// An ordered list of edits; a [`RequestFilter`] on requests, a [`ResponseFilter`] on
/// responses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    edits: Vec<HeaderEdit>,
}

impl HeaderRules {
    /// Rules from edits.
    pub fn new(edits: Vec<HeaderEdit>) -> Self {
        Self { edits }
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Applies the edits to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for edit in &self.edits {
            match edit {
                HeaderEdit::Set(name, value) => {
                    headers.insert(name.clone(), value.clone());
                }
                HeaderEdit::Add(name, value) => {
                    headers.append(name.clone(), value.clone());
                }
                HeaderEdit::Remove(name) => {
                    headers.remove(name);
                }
            }
        }
    }
}

impl RequestFilter for HeaderRules {
    fn on_request(&self, session: &mut Session) -> Result<Flow> {
        self.apply(&mut session.req.headers);
        Ok(Flow::Continue)
    }
}

impl ResponseFilter for HeaderRules {
    fn on_response(&self, _session: &Session, response: &mut response::Parts) -> Result<()> {
        self.apply(&mut response.headers);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_order() {
        let rules = HeaderRules::new(vec![
            HeaderEdit::Add(HeaderName::from_static("x-a"), HeaderValue::from_static("1")),
            HeaderEdit::Add(HeaderName::from_static("x-a"), HeaderValue::from_static("2")),
            HeaderEdit::Set(HeaderName::from_static("x-b"), HeaderValue::from_static("3")),
            HeaderEdit::Remove(HeaderName::from_static("x-c")),
        ]);
        let mut h = HeaderMap::new();
        h.insert("x-b", HeaderValue::from_static("old"));
        h.insert("x-c", HeaderValue::from_static("gone"));
        rules.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h["x-b"], "3");
        assert!(!h.contains_key("x-c"));
    }
}
