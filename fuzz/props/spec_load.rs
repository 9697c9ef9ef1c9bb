//! The property of the `spec_load` fuzz target, shared with the test that replays its found
//! inputs (`tests/integration/fuzzed.rs`): any bytes as a spec (YAML parsing, templates, the
//! schema check, the semantic checks, the compiler and the rendering of diagnostics) answer with
//! a spec error or a plan, never a panic.

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let opts = etl::spec::LoadOptions::default();
    match etl::spec::load_text("fuzz.yaml", text, None, &opts) {
        Ok(loaded) => {
            let plan = etl::plan::compile(&loaded.spec);
            let _ = etl::plan::render::render(&plan, &[]);
        }
        Err(e) => {
            let _ = e.render(false);
        }
    }
}
