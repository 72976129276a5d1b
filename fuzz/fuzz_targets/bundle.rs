//! Fuzzes the bundle parser: the input is a `config.json` as a tenant could plant it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrace::oci::{BundleConfig, BundleError, container_info};

const ID: &str = "f32e968b097a52e1cf80af265b4545e13e434203fb32412b834b45f6b25a994e";

fuzz_target!(|data: &[u8]| {
    let Ok(config) = BundleConfig::from_json(data) else {
        return;
    };
    // The container id: a real-looking one, and the sandbox id the spec names, if any.
    let named = config
        .annotations
        .get("io.kubernetes.cri.sandbox-id")
        .cloned()
        .unwrap_or_default();
    for id in [ID, named.as_str()] {
        match container_info(&config, id) {
            Ok(info) => {
                assert_eq!(info.container_id, id);
                assert!(!info.pod.uid.is_empty());
                let _ = info.attributes();
            }
            Err(err) => assert!(matches!(err, BundleError::NoPod { .. }), "{err:?}"),
        }
    }
});
