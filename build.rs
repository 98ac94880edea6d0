//! Embeds an rpath to the libtorch that torch-sys linked against, so the binary starts from any
//! directory without LD_LIBRARY_PATH, and links torch_cuda when the `cuda` feature is on.

fn main() {
    // torch-sys (links = "tch") exports the libtorch library folder it used.
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=AFT_EXTRA_RPATH");
    // Cargo passes it only to direct dependents, hence torch-sys in Cargo.toml.
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        eprintln!("build.rs: torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB)");
        std::process::exit(1);
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-env=AFT_LIBTORCH_LIB={lib_dir}");
    // Container images place the libraries beside the binary's ../lib.
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib");
    if let Ok(extra) = std::env::var("AFT_EXTRA_RPATH") {
        for dir in extra.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        // The linker drops libraries nothing references (--as-needed); keep torch_cuda so its
        // static initialisers register the CUDA backend.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
