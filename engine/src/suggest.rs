//! "Did you mean" suggestions by edit distance (Levenshtein, from `strsim`).

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|candidate| {
            (
                strsim::levenshtein(&word_lower, &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, candidate)| (*distance, *candidate))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("Sampel", ["Sample", "Decode"]), Some("Sample"));
        assert_eq!(did_you_mean("sample", ["Sample", "Decode"]), Some("Sample"));
        assert_eq!(did_you_mean("Xyzzy", ["Sample", "Decode"]), None);
    }
}
