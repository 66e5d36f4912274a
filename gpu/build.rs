//! Compiles `kernels/*.cu` to PTX with nvcc when the `cuda` feature is on.
//!
//! The PTX is embedded in the library and JIT-compiled by the driver when first used, so the
//! toolkit must not be newer than the driver of the machine that runs it (CUDA 13.0 on the H100
//! machines; `tools/cuda-toolchain.sh` installs a matching nvcc on a machine without a
//! GPU). `CUDA_COMPUTE_CAP` picks the PTX target (default 90); the kernels use `mma.sync`,
//! `ldmatrix` and `cp.async`, so anything from 80 up works.

#![allow(clippy::panic)] // a build script reports failure by panicking

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=kernels");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".to_owned());
    // `90a` style suffixes name machine-specific features; PTX for the plain target is enough here.
    let cap: String = cap.chars().take_while(char::is_ascii_digit).collect();
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_owned());
    for name in ["attention", "conv", "fused"] {
        let src = PathBuf::from("kernels").join(format!("{name}.cu"));
        let dst = out_dir.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-Ikernels")
            .arg("-o")
            .arg(&dst)
            .arg(&src)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("nvcc failed on {} ({s})", src.display()),
            Err(err) => panic!(
                "could not run nvcc ({err}); the `cuda` feature needs the CUDA toolkit \
                 (see tools/cuda-toolchain.sh or set NVCC)"
            ),
        }
    }
}
