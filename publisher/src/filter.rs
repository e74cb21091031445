//! Include/exclude lists of `schema.table` patterns (the pattern grammar is the shared API
//! crate's).

pub use binlogstream_api::pattern::{Pattern, PatternError};

/// A table is captured when it matches an include pattern (or there are none) and no exclude
/// pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFilter {
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
}

impl TableFilter {
    pub fn captures(&self, schema: &str, table: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(schema, table)))
            && !self.exclude.iter().any(|p| p.matches(schema, table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> TableFilter {
        TableFilter {
            include: include
                .iter()
                .map(|p| p.parse().expect("pattern"))
                .collect(),
            exclude: exclude
                .iter()
                .map(|p| p.parse().expect("pattern"))
                .collect(),
        }
    }

    #[test]
    fn include_and_exclude() {
        let filter = f(&["shop.*"], &["shop.tmp_*"]);
        assert!(filter.captures("shop", "orders"));
        assert!(!filter.captures("shop", "tmp_orders"));
        assert!(!filter.captures("other", "orders"));
        assert!(f(&[], &[]).captures("any", "thing"));
        assert!(f(&["*.users"], &[]).captures("a", "users"));
        assert!(!f(&["*.users"], &[]).captures("a", "users2"));
        assert!(f(&["s.a*b*c"], &[]).captures("s", "axxbyyc"));
        assert!(!f(&["s.a*b*c"], &[]).captures("s", "axxbyy"));
    }
}
