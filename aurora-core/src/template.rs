//! Prompt templates: placeholders such as `{instruction}` replaced in one pass.

/// `template` with each `(placeholder, value)` put in, in one pass over the template, so a
/// placeholder inside a substituted value is never expanded. Braces that start no placeholder
/// are kept.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let (value, len) = values
            .iter()
            .find(|(placeholder, _)| tail.starts_with(placeholder))
            .map_or(("{", 1), |(placeholder, value)| (*value, placeholder.len()));
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn one_pass_and_stray_braces_kept() {
        assert_eq!(fill("Q: {q} {a} {x}", &[("{q}", "{a}"), ("{a}", "yes")]), "Q: {a} yes {x}");
        assert_eq!(fill("{", &[]), "{");
    }
}
