//! Every fuzz target on its corpus and a few hundred mutations of it, as CI runs them: no input
//! may panic. Long runs are `veetance-fuzz --cases N` (docs/TESTING.md).

use std::path::Path;

use veetance_fuzz::Target;

#[test]
fn no_target_panics_on_its_corpus_or_mutations_of_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crashes = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    for target in Target::ALL {
        let cases = match target {
            // Each LoRA input is applied to a model twice; each PNG may decode pixels.
            Target::Lora | Target::Png => 150,
            _ => 600,
        };
        let report = veetance_fuzz::run(target, &root, crashes.path(), cases, 7)
            .unwrap_or_else(|e| panic!("{}: {e}", target.name()));
        assert_eq!(report.cases, cases);
        assert!(
            report.crashes.is_empty(),
            "{}: inputs that panicked: {:?}",
            target.name(),
            report.crashes
        );
    }
}
