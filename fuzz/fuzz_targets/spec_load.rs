//! Any bytes as a spec: YAML parsing, templates, the schema check, the semantic checks, the
//! compiler and the rendering of diagnostics must answer with a spec error or a plan, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let opts = etl::spec::LoadOptions::default();
    match etl::spec::load_text("fuzz.yaml", text, None, &opts) {
        Ok(loaded) => {
            let plan = etl::plan::compile(&loaded.spec);
            let _ = etl::plan::render::render(&plan, None);
        }
        Err(e) => {
            let _ = e.render(false);
        }
    }
});
