//! Cleaning filters: length bounds, symbol and digit ratios, language identification.

use unicode_normalization::char::is_combining_mark;
use whatlang::Lang;

use crate::config::Filter;

/// Character statistics of one document (see [`Filter`] for the exact definitions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CharStats {
    pub chars: u64,
    pub symbols: u64,
    pub digits: u64,
}

impl CharStats {
    pub fn of(text: &str) -> CharStats {
        let mut s = CharStats::default();
        for c in text.chars() {
            s.chars += 1;
            if c.is_numeric() {
                s.digits += 1;
            }
            if !c.is_alphanumeric() && !c.is_whitespace() && !is_combining_mark(c) {
                s.symbols += 1;
            }
        }
        s
    }

    /// Symbols / characters (0 for an empty text).
    pub fn symbol_ratio(&self) -> f64 {
        ratio(self.symbols, self.chars)
    }

    /// Digits / characters (0 for an empty text).
    pub fn digit_ratio(&self) -> f64 {
        ratio(self.digits, self.chars)
    }
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

/// A filter ready to run (the `langid` target resolved to a `whatlang` language).
#[derive(Debug, Clone)]
pub enum Compiled {
    MinChars(u64),
    MaxChars(u64),
    MaxSymbolRatio(f64),
    MaxDigitRatio(f64),
    Langid { lang: Lang, min_confidence: f64 },
}

impl Compiled {
    /// `source_lang` fills in a `langid` filter without its own `lang`.
    pub fn new(filter: &Filter, source_lang: &str) -> Result<Compiled, LangidError> {
        Ok(match filter {
            Filter::MinChars(n) => Compiled::MinChars(*n),
            Filter::MaxChars(n) => Compiled::MaxChars(*n),
            Filter::MaxSymbolRatio(r) => Compiled::MaxSymbolRatio(*r),
            Filter::MaxDigitRatio(r) => Compiled::MaxDigitRatio(*r),
            Filter::Langid(l) => {
                let code = l.lang.as_deref().unwrap_or(source_lang);
                let lang = whatlang_for(code).ok_or_else(|| unsupported_langid(code))?;
                Compiled::Langid { lang, min_confidence: l.min_confidence }
            }
        })
    }

    /// Whether the document passes (is kept).
    pub fn keeps(&self, text: &str, stats: &CharStats) -> bool {
        match *self {
            Compiled::MinChars(n) => stats.chars >= n,
            Compiled::MaxChars(n) => stats.chars <= n,
            Compiled::MaxSymbolRatio(r) => stats.symbol_ratio() <= r,
            Compiled::MaxDigitRatio(r) => stats.digit_ratio() <= r,
            Compiled::Langid { lang, min_confidence } => {
                whatlang::detect(text).is_some_and(|info| info.lang() == lang && info.confidence() >= min_confidence)
            }
        }
    }
}

/// A `langid` filter whose language `whatlang` cannot identify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LangidError {
    pub message: String,
    pub help: String,
}

/// The error for a `langid` target `whatlang` cannot identify.
pub fn unsupported_langid(code: &str) -> LangidError {
    if code == "code" {
        return LangidError {
            message: "a `langid` filter cannot run on a `lang = \"code\"` source".to_string(),
            help: "remove the filter, or give it `lang = \"eng_Latn\"` (etc.) if the files are really natural language"
                .to_string(),
        };
    }
    let mut known: Vec<&str> = FLORES.iter().map(|(_, c)| *c).collect();
    known.sort_unstable();
    LangidError {
        message: format!("`{code}` is not a language the `langid` filter (whatlang) can identify"),
        help: format!("remove the filter for this source; languages it can identify: {}", known.join(", ")),
    }
}

/// The `whatlang` language for a FLORES-200 code.
pub fn whatlang_for(code: &str) -> Option<Lang> {
    FLORES.iter().find(|(_, c)| *c == code).map(|(l, _)| *l)
}

/// The FLORES-200 code of a `whatlang` language.
pub fn flores_code(lang: Lang) -> &'static str {
    FLORES.iter().find(|(l, _)| *l == lang).map(|(_, c)| *c).expect("every whatlang language is mapped")
}

/// Every `whatlang` language with its FLORES-200 code (language + script as FLORES writes it;
/// macrolanguages map to the FLORES variety: Arabic -> `arb_Arab`, Mandarin -> `zho_Hans`,
/// Latvian -> `lvs_Latn`, Nepali -> `npi_Deva`, Odia -> `ory_Orya`, Uzbek -> `uzn_Latn`,
/// Azerbaijani -> `azj_Latn`, Yiddish -> `ydd_Hebr`).
pub const FLORES: &[(Lang, &str)] = &[
    (Lang::Epo, "epo_Latn"),
    (Lang::Eng, "eng_Latn"),
    (Lang::Rus, "rus_Cyrl"),
    (Lang::Cmn, "zho_Hans"),
    (Lang::Spa, "spa_Latn"),
    (Lang::Por, "por_Latn"),
    (Lang::Ita, "ita_Latn"),
    (Lang::Ben, "ben_Beng"),
    (Lang::Fra, "fra_Latn"),
    (Lang::Deu, "deu_Latn"),
    (Lang::Ukr, "ukr_Cyrl"),
    (Lang::Kat, "kat_Geor"),
    (Lang::Ara, "arb_Arab"),
    (Lang::Hin, "hin_Deva"),
    (Lang::Jpn, "jpn_Jpan"),
    (Lang::Heb, "heb_Hebr"),
    (Lang::Yid, "ydd_Hebr"),
    (Lang::Pol, "pol_Latn"),
    (Lang::Amh, "amh_Ethi"),
    (Lang::Jav, "jav_Latn"),
    (Lang::Kor, "kor_Hang"),
    (Lang::Nob, "nob_Latn"),
    (Lang::Dan, "dan_Latn"),
    (Lang::Swe, "swe_Latn"),
    (Lang::Fin, "fin_Latn"),
    (Lang::Tur, "tur_Latn"),
    (Lang::Nld, "nld_Latn"),
    (Lang::Hun, "hun_Latn"),
    (Lang::Ces, "ces_Latn"),
    (Lang::Ell, "ell_Grek"),
    (Lang::Bul, "bul_Cyrl"),
    (Lang::Bel, "bel_Cyrl"),
    (Lang::Mar, "mar_Deva"),
    (Lang::Kan, "kan_Knda"),
    (Lang::Ron, "ron_Latn"),
    (Lang::Slv, "slv_Latn"),
    (Lang::Hrv, "hrv_Latn"),
    (Lang::Srp, "srp_Cyrl"),
    (Lang::Mkd, "mkd_Cyrl"),
    (Lang::Lit, "lit_Latn"),
    (Lang::Lav, "lvs_Latn"),
    (Lang::Est, "est_Latn"),
    (Lang::Tam, "tam_Taml"),
    (Lang::Vie, "vie_Latn"),
    (Lang::Urd, "urd_Arab"),
    (Lang::Tha, "tha_Thai"),
    (Lang::Guj, "guj_Gujr"),
    (Lang::Uzb, "uzn_Latn"),
    (Lang::Pan, "pan_Guru"),
    (Lang::Aze, "azj_Latn"),
    (Lang::Ind, "ind_Latn"),
    (Lang::Tel, "tel_Telu"),
    (Lang::Pes, "pes_Arab"),
    (Lang::Mal, "mal_Mlym"),
    (Lang::Ori, "ory_Orya"),
    (Lang::Mya, "mya_Mymr"),
    (Lang::Nep, "npi_Deva"),
    (Lang::Sin, "sin_Sinh"),
    (Lang::Khm, "khm_Khmr"),
    (Lang::Tuk, "tuk_Latn"),
    (Lang::Aka, "aka_Latn"),
    (Lang::Zul, "zul_Latn"),
    (Lang::Sna, "sna_Latn"),
    (Lang::Afr, "afr_Latn"),
    (Lang::Lat, "lat_Latn"),
    (Lang::Slk, "slk_Latn"),
    (Lang::Cat, "cat_Latn"),
    (Lang::Tgl, "tgl_Latn"),
    (Lang::Hye, "hye_Armn"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_whatlang_language_has_one_flores_code() {
        for lang in Lang::all() {
            let code = flores_code(*lang);
            assert_eq!(whatlang_for(code), Some(*lang), "{code}");
            assert!(
                code.starts_with(lang.code())
                    || ["zho", "arb", "lvs", "npi", "ory", "uzn", "azj", "ydd"].contains(&&code[..3])
            );
        }
        assert_eq!(FLORES.len(), Lang::all().len());
    }

    #[test]
    fn char_stats_follow_the_definitions() {
        let s = CharStats::of("ab 12, !");
        assert_eq!(s, CharStats { chars: 8, symbols: 2, digits: 2 });
        // Devanagari vowel signs and the virama are combining marks, not symbols.
        let s = CharStats::of("नमस्ते");
        assert_eq!(s.symbols, 0);
        // Full-width and Devanagari digits are digits.
        assert_eq!(CharStats::of("１२").digits, 2);
        assert_eq!(CharStats::of("").symbol_ratio(), 0.0);
    }

    #[test]
    fn langid_on_code_is_rejected() {
        let f = Filter::Langid(crate::config::LangId { lang: None, min_confidence: 0.5 });
        assert!(Compiled::new(&f, "code").unwrap_err().message.contains("cannot run on a `lang = \"code\"` source"));
        assert!(Compiled::new(&f, "swh_Latn").unwrap_err().message.contains("`swh_Latn` is not a language"));
        assert!(Compiled::new(&f, "fin_Latn").is_ok());
    }
}
