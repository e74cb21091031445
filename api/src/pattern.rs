//! `schema.table` patterns with `*` wildcards (`--include`/`--exclude`, `spec.tables`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    schema: String,
    table: String,
    text: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid table pattern `{0}`: expected SCHEMA.TABLE, where either part may use `*`")]
pub struct PatternError(String);

impl std::str::FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (schema, table) = t.split_once('.').ok_or_else(|| PatternError(s.into()))?;
        if schema.is_empty() || table.is_empty() || table.contains('.') {
            return Err(PatternError(s.into()));
        }
        Ok(Pattern {
            schema: schema.to_string(),
            table: table.to_string(),
            text: t.to_string(),
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        glob(self.schema.as_bytes(), schema.as_bytes())
            && glob(self.table.as_bytes(), table.as_bytes())
    }
}

/// `*` matches any run of characters; everything else matches itself (case-sensitive, as
/// MySQL table names are on Linux).
fn glob(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_of_characters() {
        let p: Pattern = "s.a*b*c".parse().expect("pattern");
        assert!(p.matches("s", "axxbyyc"));
        assert!(!p.matches("s", "axxbyy"));
        assert!(!p.matches("t", "abc"));
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!("shop".parse::<Pattern>().is_err());
        assert!("shop.".parse::<Pattern>().is_err());
        assert!(".t".parse::<Pattern>().is_err());
        assert!("a.b.c".parse::<Pattern>().is_err());
    }
}
