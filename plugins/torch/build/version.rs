// The version of a libtorch installation, for build scripts (included with `include!` by
// plugins/torch/build.rs and by tch-free crates that record it, e.g. plugins/train-plugins).

/// Read from `build-version` of a libtorch zip, or `version.py` of a pip-installed torch;
/// "unknown" otherwise.
fn libtorch_version(root: &std::path::Path) -> String {
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        let v = text.trim();
        if !v.is_empty() {
            return v.to_owned();
        }
    }
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("__version__") {
                let v = rest.trim_start_matches([' ', '=']).trim().trim_matches(['\'', '"']);
                if !v.is_empty() {
                    return v.to_owned();
                }
            }
        }
    }
    "unknown".to_owned()
}
