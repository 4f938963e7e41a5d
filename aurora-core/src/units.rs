//! Numbers for people: counts with SI prefixes, as `aurora plan` estimates and warnings show them.

/// A count with an SI prefix: `1.500 M`, `15.500 G`; below a thousand, the integer and a space.
pub fn si(value: f64) -> String {
    const PREFIXES: [(f64, &str); 6] = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    match PREFIXES.iter().find(|(scale, _)| value >= *scale) {
        Some((scale, prefix)) => format!("{:.3} {prefix}", value / scale),
        None => format!("{value:.0} "),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes() {
        assert_eq!(super::si(999.0), "999 ");
        assert_eq!(super::si(25_300.0), "25.300 k");
        assert_eq!(super::si(377_487_360_000.0), "377.487 G");
    }
}
