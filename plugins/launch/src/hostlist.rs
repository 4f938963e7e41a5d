//! Slurm host lists (`node[01-03,07],gpu-[1-2]-ib`), expanded natively so that finding the master
//! node never depends on `scontrol` being installed on the compute nodes.

use crate::LaunchError;

/// More hosts than any cluster has: a larger list is a typo (`node[1-10000000]`), not a job.
pub const MAX_HOSTS: usize = 1_000_000;

/// One bracket group: the ranges `(lo, hi, width)` in the order written.
type Group = Vec<(u64, u64, usize)>;

enum Part<'a> {
    Text(&'a str),
    Group(Group),
}

/// Expands a host list exactly as `scontrol show hostnames` does: entries are separated by commas
/// or whitespace outside brackets; each bracket group is a comma-separated list of numbers and
/// `LOW-HIGH` ranges, zero-padded to the width of the lower bound as written; several groups
/// expand as a cartesian product, leftmost group outermost. Duplicates are kept.
pub fn expand(list: &str) -> Result<Vec<String>, LaunchError> {
    let entries = split_entries(list)?;
    let mut parsed = Vec::with_capacity(entries.len());
    let mut total = 0usize;
    for entry in entries {
        let parts = parse_entry(list, entry)?;
        let count = parts.iter().try_fold(1usize, |n, part| match part {
            Part::Text(_) => Some(n),
            Part::Group(group) => group
                .iter()
                .try_fold(0usize, |sum, &(lo, hi, _)| sum.checked_add(usize::try_from(hi - lo).ok()?.checked_add(1)?))
                .and_then(|size| n.checked_mul(size)),
        });
        total = count
            .and_then(|count| total.checked_add(count))
            .filter(|&t| t <= MAX_HOSTS)
            .ok_or_else(|| LaunchError::TooManyHosts { list: list.to_owned(), limit: MAX_HOSTS })?;
        parsed.push(parts);
    }
    if total == 0 {
        return Err(LaunchError::EmptyHostList { list: list.to_owned() });
    }
    let mut hosts = Vec::with_capacity(total);
    for parts in parsed {
        let mut names = vec![String::new()];
        for part in parts {
            names = match part {
                Part::Text(text) => names.into_iter().map(|name| name + text).collect(),
                Part::Group(group) => names
                    .iter()
                    .flat_map(|name| {
                        group
                            .iter()
                            .flat_map(move |&(lo, hi, width)| (lo..=hi).map(move |n| format!("{name}{n:0width$}")))
                    })
                    .collect(),
            };
        }
        hosts.extend(names);
    }
    Ok(hosts)
}

/// Splits at separators outside brackets, skipping empty entries as Slurm does.
fn split_entries(list: &str) -> Result<Vec<&str>, LaunchError> {
    let unbalanced = |at| LaunchError::UnbalancedBracket { list: list.to_owned(), at };
    let (mut entries, mut start, mut open) = (Vec::new(), 0, None);
    for (i, c) in list.char_indices() {
        match (c, open) {
            ('[', None) => open = Some(i),
            ('[', Some(_)) | (']', None) => return Err(unbalanced(i)),
            (']', Some(_)) => open = None,
            (',' | ' ' | '\t' | '\n', None) => {
                entries.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(at) = open {
        return Err(unbalanced(at));
    }
    entries.push(&list[start..]);
    entries.retain(|entry| !entry.is_empty());
    Ok(entries)
}

/// Parses one entry (balanced brackets, no separators outside them) into text and groups.
fn parse_entry<'a>(list: &str, mut entry: &'a str) -> Result<Vec<Part<'a>>, LaunchError> {
    let mut parts = Vec::new();
    while let Some((text, rest)) = entry.split_once('[') {
        let (ranges, rest) = rest.split_once(']').expect("split_entries checked the brackets");
        parts.push(Part::Text(text));
        parts.push(Part::Group(ranges.split(',').map(|range| parse_range(list, range)).collect::<Result<_, _>>()?));
        entry = rest;
    }
    parts.push(Part::Text(entry));
    Ok(parts)
}

fn parse_range(list: &str, range: &str) -> Result<(u64, u64, usize), LaunchError> {
    let bad = || LaunchError::BadRange { list: list.to_owned(), range: range.to_owned() };
    let number =
        |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().map_err(|_| bad()) } else { Err(bad()) };
    let (lo_text, hi_text) = range.split_once('-').unwrap_or((range, range));
    let (lo, hi) = (number(lo_text)?, number(hi_text)?);
    if lo > hi {
        return Err(LaunchError::ReversedRange { list: list.to_owned(), range: range.to_owned() });
    }
    Ok((lo, hi, lo_text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hosts(list: &str) -> Vec<String> {
        expand(list).unwrap()
    }

    #[test]
    fn plain_names_and_separators() {
        assert_eq!(hosts("a"), ["a"]);
        assert_eq!(hosts("a,b c\tb,,"), ["a", "b", "c", "b"]);
    }

    #[test]
    fn ranges_keep_the_lower_bound_width() {
        assert_eq!(hosts("node[01-03,07]"), ["node01", "node02", "node03", "node07"]);
        assert_eq!(hosts("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(hosts("n[008-010]"), ["n008", "n009", "n010"]);
        assert_eq!(hosts("n[5]"), ["n5"]);
    }

    #[test]
    fn groups_are_a_cartesian_product_leftmost_outermost() {
        assert_eq!(hosts("r[1-2]-n[01-02]-ib,x"), ["r1-n01-ib", "r1-n02-ib", "r2-n01-ib", "r2-n02-ib", "x"]);
        assert_eq!(hosts("[1-2]"), ["1", "2"]);
    }

    #[test]
    fn malformed_lists_are_errors() {
        for list in ["", " , ", "n[1-2", "n1-2]", "n[[1]]", "n[1]]"] {
            assert!(
                matches!(expand(list), Err(LaunchError::EmptyHostList { .. } | LaunchError::UnbalancedBracket { .. })),
                "{list}"
            );
        }
        for list in ["n[]", "n[a]", "n[1-]", "n[-2]", "n[1,,2]", "n[1-2-3]", "n[+1]", "n[99999999999999999999]"] {
            assert!(matches!(expand(list), Err(LaunchError::BadRange { .. })), "{list}");
        }
        assert!(matches!(expand("n[5-3]"), Err(LaunchError::ReversedRange { .. })));
        assert!(matches!(expand("n[0-999999]"), Ok(h) if h.len() == MAX_HOSTS));
        for list in ["n[0-1000000]", "n[0-999999],x", "a[0-1000]b[0-1000]", "n[0-18446744073709551615]"] {
            assert!(matches!(expand(list), Err(LaunchError::TooManyHosts { .. })), "{list}");
        }
    }

    #[test]
    fn error_messages() {
        let messages: Vec<String> =
            ["n[1-2", "n[5-3]", "n[0x]", " ", "n[0-99999999]"].map(|list| expand(list).unwrap_err().to_string()).into();
        insta::assert_snapshot!(messages.join("\n"));
    }

    proptest! {
        #[test]
        fn compressed_form_expands_to_the_generated_hosts(
            entries in prop::collection::vec(
                ("[a-z][a-z-]{0,5}", prop::collection::vec((0u64..2000, 0u64..20), 1..4), 1usize..5, "(-[a-z]{1,3})?"),
                1..4,
            )
        ) {
            let mut expected = Vec::new();
            let mut compressed = Vec::new();
            for (prefix, ranges, width, suffix) in &entries {
                let mut written = Vec::new();
                for &(lo, len) in ranges {
                    let hi = lo + len;
                    expected.extend((lo..=hi).map(|n| format!("{prefix}{n:0width$}{suffix}")));
                    written.push(if len == 0 { format!("{lo:0width$}") } else { format!("{lo:0width$}-{hi}") });
                }
                compressed.push(format!("{prefix}[{}]{suffix}", written.join(",")));
            }
            prop_assert_eq!(expand(&compressed.join(",")).unwrap(), expected);
        }
    }
}
