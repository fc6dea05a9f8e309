//! Text as the stages store it: whitespace collapsed, so the same words compare equal however
//! the page laid them out.

/// Collapses runs of whitespace (including no-break spaces) to one space and trims.
pub fn collapse(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_whitespace_become_one_space() {
        assert_eq!(collapse("  a \n\t b\u{a0}c  "), "a b c");
        assert_eq!(collapse(""), "");
    }
}
