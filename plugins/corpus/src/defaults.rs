//! Per-language cleaning defaults, from the language packs a manifest loads.
//!
//! A pack's `language.toml` lists the filters a source in its language gets when the source's
//! entry has no `filters` key (see `aurora_core::language`). Precedence, decided when planning
//! ([`resolve_filters`]):
//! 1. an explicit `filters = [...]` always wins, and `filters = []` means no filters at all;
//! 2. without a `filters` key, the pack loaded for the source's `lang` applies;
//! 3. without a `filters` key and without a pack, no filters apply.
//!
//! The filters applied are written into the source node's keyed config, so a pack that changes its
//! defaults reruns the sources that use them, and removing the pack reverts their keys.

use aurora_core::diagnostic::Diagnostic;
use aurora_core::plugin::PlanContext;

use crate::config::Filter;

/// Where the filters of a source come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOrigin {
    /// The entry's own `filters` key (possibly `[]`).
    Explicit,
    /// The cleaning defaults of the language pack loaded by this entry (`SECTION.NAME`).
    Language(String),
    /// No `filters` key and no pack for the language.
    None,
}

/// The filters a source applies: its explicit `filters` if it has the key, otherwise the
/// defaults of the pack loaded for `lang`, otherwise none. A pack filter that is not a filter
/// is an error located in the pack's `language.toml`.
pub fn resolve_filters(
    explicit: Option<&[Filter]>,
    lang: &str,
    ctx: &PlanContext<'_>,
) -> Result<(Vec<Filter>, FilterOrigin), Vec<Diagnostic>> {
    if let Some(filters) = explicit {
        return Ok((filters.to_vec(), FilterOrigin::Explicit));
    }
    let Some(pack) = ctx.language(lang) else { return Ok((Vec::new(), FilterOrigin::None)) };
    let mut filters = Vec::new();
    let mut problems = Vec::new();
    for (i, value) in pack.pack.cleaning.filters.iter().enumerate() {
        match serde_json::from_value::<Filter>(value.clone()) {
            Ok(f) => filters.push(f),
            Err(e) => {
                let pointer = format!("/cleaning/filters/{i}");
                problems.push(
                    Diagnostic::new(format!("cleaning filter {i} of the `{lang}` pack (`{}`): {e}", pack.entry))
                        .at(pack.sources.value(&pointer))
                        .pointer(pointer)
                        .expected(
                            "a source filter, e.g. `{ min_chars = 50 }`, `{ max_symbol_ratio = 0.1 }`, \
                             `{ langid = { min_confidence = 0.3 } }`",
                        ),
                );
            }
        }
    }
    if problems.is_empty() { Ok((filters, FilterOrigin::Language(pack.entry.clone()))) } else { Err(problems) }
}
