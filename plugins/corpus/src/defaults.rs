//! Per-language cleaning defaults, registered by language crates through [`inventory`].
//!
//! A crate that adds a language (for example `aurora-lang-swahili`) registers the filters a
//! source in that language gets when its manifest entry has no `filters` key:
//!
//! ```rust,ignore
//! use aurora_corpus::config::Filter;
//! use aurora_corpus::defaults::LanguageDefaults;
//!
//! inventory::submit! {
//!     LanguageDefaults {
//!         lang: "swh_Latn",
//!         provider: env!("CARGO_PKG_NAME"),
//!         filters: &[Filter::MinChars(100), Filter::MaxSymbolRatio(0.15), Filter::MaxDigitRatio(0.1)],
//!     }
//! }
//! ```
//!
//! Precedence, decided when planning (see [`resolve_filters`]):
//! 1. an explicit `filters = [...]` always wins, and `filters = []` means no filters at all;
//! 2. without a `filters` key, the filters registered for the source's `lang` apply;
//! 3. without a `filters` key and without a registration, no filters apply.
//!
//! The filters applied are written into the source node's keyed config, so they are part of
//! its cache key: a language crate that changes its defaults reruns the sources that use them.
//! Registering defaults for one language twice (two linked crates) is a planning error naming
//! both crates.

use crate::config::Filter;

/// Cleaning filters for sources in one language that do not list their own `filters`.
#[derive(Debug)]
pub struct LanguageDefaults {
    /// FLORES-200 code of the language (`swh_Latn`).
    pub lang: &'static str,
    /// Who registered them (the crate name, `env!("CARGO_PKG_NAME")`), for messages.
    pub provider: &'static str,
    /// The filters, in order, as a manifest would write them.
    pub filters: &'static [Filter],
}

inventory::collect!(LanguageDefaults);

/// Every registered [`LanguageDefaults`] for `lang`, sorted by provider (more than one is an error
/// reported when planning).
pub fn registered_for(lang: &str) -> Vec<&'static LanguageDefaults> {
    let mut found: Vec<&'static LanguageDefaults> =
        inventory::iter::<LanguageDefaults>.into_iter().filter(|d| d.lang == lang).collect();
    found.sort_by_key(|d| d.provider);
    found
}

/// Every registered [`LanguageDefaults`], sorted by language then provider.
pub fn registered() -> Vec<&'static LanguageDefaults> {
    let mut all: Vec<&'static LanguageDefaults> = inventory::iter::<LanguageDefaults>.into_iter().collect();
    all.sort_by_key(|d| (d.lang, d.provider));
    all
}

/// Where the filters of a source come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOrigin {
    /// The entry's own `filters` key (possibly `[]`).
    Explicit,
    /// The defaults registered for the source's language by this crate.
    Language(&'static str),
    /// No `filters` key and no defaults registered for the language.
    None,
}

/// Two crates registered defaults for the same language.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cleaning defaults for `{lang}` are registered by more than one linked crate: {}; \
     link only one of them, or give the source an explicit `filters` list",
    providers.join(", ")
)]
pub struct DuplicateDefaults {
    pub lang: String,
    pub providers: Vec<&'static str>,
}

/// The filters a source applies: its explicit `filters` if it has the key, otherwise the
/// defaults registered for `lang`, otherwise none.
pub fn resolve_filters(
    explicit: Option<&[Filter]>,
    lang: &str,
) -> Result<(Vec<Filter>, FilterOrigin), DuplicateDefaults> {
    if let Some(filters) = explicit {
        return Ok((filters.to_vec(), FilterOrigin::Explicit));
    }
    match registered_for(lang).as_slice() {
        [] => Ok((Vec::new(), FilterOrigin::None)),
        [one] => Ok((one.filters.to_vec(), FilterOrigin::Language(one.provider))),
        many => Err(DuplicateDefaults { lang: lang.to_string(), providers: many.iter().map(|d| d.provider).collect() }),
    }
}
