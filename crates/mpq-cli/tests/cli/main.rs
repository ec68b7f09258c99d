//! End-to-end tests of the `mpq` binary: exit codes, error messages and the files a command
//! leaves behind (see `docs/cli.md`). Every test runs the built binary in its own
//! temporary folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

mod bench;
mod compare;
mod cw_hawq;
mod formats;
mod haq;
mod hardening;
mod limpq;
mod onnx;
mod quantize;
mod report;
mod search_hw;

/// Small synthetic data set shared by the happy-path tests (64 samples, 3 classes, 1x8x8).
const SYNTH: &str = "synthetic:1x8x8:3:64";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A unique temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("mpq-cli-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }

    /// Relative paths of every file and folder under the temp dir.
    fn listing(&self) -> BTreeSet<String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).expect("read temp dir") {
                let p = entry.expect("dir entry").path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel);
                if p.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.0, &self.0, &mut out);
        out
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `mpq ARGS` in `dir` (stdin closed) and returns its output.
fn mpq_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpq"))
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("failed to start the mpq binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "mpq {}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs `mpq ARGS` in `dir` and checks that it fails the documented way: exit `code`, stderr
/// starting with `error: ` and containing every fragment of `fragments`, no panic or
/// backtrace, and an unchanged set of files in `dir` (nothing written, not even a temp file).
fn expect_error(dir: &TempDir, args: &[&str], code: i32, fragments: &[&str]) -> String {
    let before = dir.listing();
    let out = mpq_in(dir.path(), args);
    let ctx = describe(args, &out);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "wrong exit code\n{ctx}");
    assert!(
        stderr.starts_with("error: "),
        "stderr must start with `error: `\n{ctx}"
    );
    for f in fragments {
        assert!(stderr.contains(f), "stderr should contain {f:?}\n{ctx}");
    }
    assert!(!stderr.contains("panicked"), "the binary panicked\n{ctx}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "backtrace hint\n{ctx}");
    let after = dir.listing();
    assert_eq!(
        before, after,
        "a failing command must leave no file behind\n{ctx}"
    );
    stderr
}

/// Runs `mpq ARGS` in `dir`, expects success and returns stdout.
fn expect_ok(dir: &Path, args: &[&str]) -> String {
    let out = mpq_in(dir, args);
    let ctx = describe(args, &out);
    assert_eq!(out.status.code(), Some(0), "expected success\n{ctx}");
    assert!(!text(&out.stderr).contains("panicked"), "{ctx}");
    text(&out.stdout)
}

fn parse_json(stdout: &str, ctx: &str) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {ctx}\n{stdout}"))
}

/// The agent settings (HAQ, CW-HAWQ) of a small, fast search on the synthetic set: tiny nets,
/// a short warm-up.
const AGENT_FAST: &[&str] = &[
    "--data",
    SYNTH,
    "--val-samples",
    "16",
    "--calib-samples",
    "16",
    "--warmup",
    "3",
    "--hidden1",
    "32",
    "--hidden2",
    "32",
    "--json",
    "--quiet",
];

/// Runs `mpq ARGS` in `dir`, expects success and parses stdout as one JSON object.
fn expect_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    parse_json(&expect_ok(dir, args), &format!("mpq {}", args.join(" ")))
}

/// `base` followed by `extra`.
fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    [base, extra].concat()
}

/// `mpq train` of `arch` on `data` for `epochs` into `out`.
fn train_args<'a>(arch: &'a str, data: &'a str, epochs: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train", "--arch", arch, "--data", data, "--epochs", epochs, "--out", out,
    ]
}

/// Trains the 1-epoch MLP on the synthetic set into `dir/name` and returns the train JSON.
fn train_mlp(dir: &Path, name: &str, extra: &[&str]) -> serde_json::Value {
    let args = train_args("mlp", SYNTH, "1", name);
    let v = expect_json(dir, &with(&args, &[&["--json", "--quiet"], extra].concat()));
    assert!(dir.join(name).is_file(), "train did not write {name}");
    v
}

/// `mpq search --method METHOD` of the MLP `m.safetensors` into `out`, then `extra`.
fn search_args<'a>(method: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let args = [
        "search",
        "--model",
        "m.safetensors",
        "--method",
        method,
        "--out",
        out,
    ];
    with(&args, extra)
}

/// `mpq analyze` of `model` on the synthetic set, 16 samples a batch, into `out`, then `extra`.
fn analyze_args<'a>(model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let args = [
        "analyze",
        "--model",
        model,
        "--data",
        SYNTH,
        "--batch-size",
        "16",
        "--out",
        out,
    ];
    with(&args, extra)
}

/// `mpq eval --json` of `model` on the test split of `data`.
fn eval_json(dir: &Path, model: &str, data: &str) -> serde_json::Value {
    expect_json(dir, &["eval", "--model", model, "--data", data, "--json"])
}

/// `mpq quantize --json --quiet` of `model` under `policy` on `data` into the folder `out`,
/// then `extra`; returns the printed summary.
fn quantize_json(
    dir: &Path,
    [model, policy, data, out]: [&str; 4],
    extra: &[&str],
) -> serde_json::Value {
    let args = [
        "quantize", "--model", model, "--policy", policy, "--data", data, "--out", out, "--json",
        "--quiet",
    ];
    expect_json(dir, &with(&args, extra))
}

/// Writes a plan `{"method": method, "layers": layers}` to `dir/name`.
fn write_plan(dir: &Path, name: &str, method: &str, layers: serde_json::Value) {
    let plan = serde_json::json!({"method": method, "layers": layers});
    std::fs::write(dir.join(name), plan.to_string()).unwrap();
}

/// The header (metadata) and tensor bytes of a safetensors file.
fn split_safetensors(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    (header, &bytes[8 + n..])
}

/// `src` with the first `count` values of tensor `name` set to NaN.
fn poison(src: &Path, dst: &Path, name: &str, count: usize) {
    let bytes = std::fs::read(src).unwrap();
    let (header, _) = split_safetensors(&bytes);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let offsets = &header[name]["data_offsets"];
    let (start, end) = (
        offsets[0].as_u64().unwrap() as usize,
        offsets[1].as_u64().unwrap() as usize,
    );
    let mut out = bytes.clone();
    for i in 0..count.min((end - start) / 4) {
        let at = 8 + n + start + 4 * i;
        out[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(dst, out).unwrap();
}

// ---------------------------------------------------------------------------------------------
// IDX writers (the `mnist:DIR` format)
// ---------------------------------------------------------------------------------------------

fn idx_images(n: usize, h: usize, w: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0000_0803u32.to_be_bytes());
    for d in [n, h, w] {
        v.extend_from_slice(&(d as u32).to_be_bytes());
    }
    v.extend((0..n * h * w).map(|i| (i * 37 % 256) as u8));
    v
}

fn idx_labels(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0000_0801u32.to_be_bytes());
    v.extend_from_slice(&(n as u32).to_be_bytes());
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

/// Writes a valid, small MNIST-shaped set (28x28) into `dir`: 20 train and 10 test samples.
fn write_mnist_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx_images(20, 28, 28)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(20)).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx_images(10, 28, 28)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(10)).unwrap();
}

fn lenet_on_mnist_dir(data_dir: &Path) -> Vec<String> {
    let out = data_dir.join("m.safetensors");
    vec![
        "train".into(),
        "--arch".into(),
        "lenet5".into(),
        "--data".into(),
        format!("mnist:{}", data_dir.display()),
        "--epochs".into(),
        "1".into(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ]
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Deterministic pseudo-random bytes (no extra crates).
fn pseudo_random_bytes(n: usize, mut state: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Missing model file
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_model_file_is_input_error() {
    let dir = TempDir::new("missing");
    expect_error(
        &dir,
        &[
            "eval",
            "--model",
            "/nonexistent.safetensors",
            "--data",
            "mnist10k",
        ],
        2,
        &["/nonexistent.safetensors", "No such file"],
    );
    // The same through `info`, with a relative path.
    expect_error(
        &dir,
        &["info", "--model", "nothere.safetensors"],
        2,
        &["nothere.safetensors"],
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Corrupt and truncated safetensors
// ---------------------------------------------------------------------------------------------

#[test]
fn random_bytes_safetensors_is_input_error() {
    let dir = TempDir::new("randst");
    std::fs::write(
        dir.join("rand.safetensors"),
        pseudo_random_bytes(100, 0x9e37_79b9),
    )
    .unwrap();
    expect_error(
        &dir,
        &["eval", "--model", "rand.safetensors", "--data", SYNTH],
        2,
        &["rand.safetensors", "not a valid safetensors file"],
    );
    expect_error(
        &dir,
        &["info", "--model", "rand.safetensors"],
        2,
        &["not a valid safetensors file"],
    );
    // Fewer than the 8 bytes of the header length.
    std::fs::write(dir.join("tiny.safetensors"), b"abc").unwrap();
    expect_error(
        &dir,
        &["info", "--model", "tiny.safetensors"],
        2,
        &["tiny.safetensors"],
    );
}

#[test]
fn truncated_safetensors_is_input_error() {
    let dir = TempDir::new("truncst");
    train_mlp(dir.path(), "full.safetensors", &[]);
    let bytes = std::fs::read(dir.join("full.safetensors")).unwrap();
    // Cut in the middle of the tensor data.
    std::fs::write(dir.join("half.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    expect_error(
        &dir,
        &["eval", "--model", "half.safetensors", "--data", SYNTH],
        2,
        &["half.safetensors", "not a valid safetensors file"],
    );
    // Cut in the middle of the JSON header.
    std::fs::write(dir.join("head.safetensors"), &bytes[..200]).unwrap();
    expect_error(
        &dir,
        &["info", "--model", "head.safetensors"],
        2,
        &["head.safetensors", "not a valid safetensors file"],
    );
    // The untouched file still loads.
    expect_ok(
        dir.path(),
        &[
            "eval",
            "--model",
            "full.safetensors",
            "--data",
            SYNTH,
            "--quiet",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Broken IDX files via mnist:DIR
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_mnist_dir_trains() {
    // Control for the broken-IDX tests: the same files, intact, do train.
    let dir = TempDir::new("idxok");
    let data = dir.join("mnist");
    write_mnist_dir(&data);
    expect_ok(dir.path(), &as_strs(&lenet_on_mnist_dir(&data)));
    assert!(data.join("m.safetensors").is_file());
}

#[test]
fn idx_wrong_magic_is_input_error() {
    let dir = TempDir::new("idxmagic");
    let data = dir.join("mnist");
    write_mnist_dir(&data);
    // A labels file where the images file should be.
    std::fs::write(data.join("train-images-idx3-ubyte"), idx_labels(20)).unwrap();
    expect_error(
        &dir,
        &as_strs(&lenet_on_mnist_dir(&data)),
        2,
        &["train-images-idx3-ubyte", "bad IDX magic 0x00000801"],
    );
    assert!(!data.join("m.safetensors").exists());

    // A garbage magic in the test labels.
    write_mnist_dir(&data);
    let mut lbl = idx_labels(10);
    lbl[..4].copy_from_slice(b"\xde\xad\xbe\xef");
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), lbl).unwrap();
    expect_error(
        &dir,
        &as_strs(&lenet_on_mnist_dir(&data)),
        2,
        &["t10k-labels-idx1-ubyte", "bad IDX magic 0xdeadbeef"],
    );
    assert!(!data.join("m.safetensors").exists());
}

#[test]
fn idx_truncated_payload_is_input_error() {
    let dir = TempDir::new("idxtrunc");
    let data = dir.join("mnist");
    write_mnist_dir(&data);
    let img = idx_images(10, 28, 28);
    std::fs::write(data.join("t10k-images-idx3-ubyte"), &img[..img.len() - 100]).unwrap();
    expect_error(
        &dir,
        &as_strs(&lenet_on_mnist_dir(&data)),
        2,
        &["t10k-images-idx3-ubyte", "truncated"],
    );
    assert!(!data.join("m.safetensors").exists());

    // Truncated inside the header.
    write_mnist_dir(&data);
    std::fs::write(data.join("train-labels-idx1-ubyte"), &idx_labels(20)[..6]).unwrap();
    expect_error(
        &dir,
        &as_strs(&lenet_on_mnist_dir(&data)),
        2,
        &["train-labels-idx1-ubyte", "truncated"],
    );
    assert!(!data.join("m.safetensors").exists());
}

#[test]
fn idx_missing_file_and_label_mismatch_are_input_errors() {
    let dir = TempDir::new("idxmissing");
    let data = dir.join("mnist");
    write_mnist_dir(&data);
    std::fs::remove_file(data.join("t10k-labels-idx1-ubyte")).unwrap();
    expect_error(
        &dir,
        &as_strs(&lenet_on_mnist_dir(&data)),
        2,
        &["t10k-labels-idx1-ubyte"],
    );
    // Label count differs from the image count.
    write_mnist_dir(&data);
    std::fs::write(data.join("train-labels-idx1-ubyte"), idx_labels(19)).unwrap();
    expect_error(
        &dir,
        &as_strs(&lenet_on_mnist_dir(&data)),
        2,
        &["count mismatch"],
    );
    assert!(!data.join("m.safetensors").exists());
}

// ---------------------------------------------------------------------------------------------
// 4. imagefolder without classes
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_imagefolder_is_input_error() {
    let dir = TempDir::new("imgfolder");
    std::fs::create_dir_all(dir.join("imgs/train")).unwrap();
    std::fs::create_dir_all(dir.join("imgs/val")).unwrap();
    expect_error(
        &dir,
        &train_args("mlp", "imagefolder:imgs", "1", "m.safetensors"),
        2,
        &["no class directories"],
    );
    assert!(!dir.join("m.safetensors").exists());
    expect_error(
        &dir,
        &["eval", "--model", "zoo:mlp", "--data", "imagefolder:imgs"],
        2,
        &["no class directories"],
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Unknown architecture
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_architecture_lists_known_names() {
    let dir = TempDir::new("arch");
    let mut want = vec!["unknown architecture", "nosuchnet"];
    want.extend_from_slice(mpq::zoo::ARCHS);
    expect_error(
        &dir,
        &train_args("nosuchnet", SYNTH, "1", "m.safetensors"),
        2,
        &want,
    );
    assert!(!dir.join("m.safetensors").exists());
    expect_error(&dir, &["info", "--model", "zoo:nosuchnet"], 2, &want);
}

#[test]
fn failed_train_leaves_existing_output_untouched() {
    let dir = TempDir::new("untouched");
    std::fs::write(dir.join("m.safetensors"), b"previous contents").unwrap();
    expect_error(
        &dir,
        &train_args("nosuchnet", SYNTH, "1", "m.safetensors"),
        2,
        &["unknown architecture"],
    );
    assert_eq!(
        std::fs::read(dir.join("m.safetensors")).unwrap(),
        b"previous contents"
    );
}

#[test]
fn train_out_is_a_directory_leaves_no_temp_file() {
    let dir = TempDir::new("outdir");
    std::fs::create_dir(dir.join("outdir")).unwrap();
    // `expect_error` also checks that no temp file was left next to the target.
    expect_error(
        &dir,
        &with(&train_args("mlp", SYNTH, "1", "outdir"), &["--quiet"]),
        2,
        &["outdir"],
    );
}

#[test]
fn train_zero_epochs_is_input_error() {
    let dir = TempDir::new("epochs0");
    expect_error(
        &dir,
        &train_args("mlp", SYNTH, "0", "m.safetensors"),
        2,
        &["epochs"],
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Input shapes the model cannot take
// ---------------------------------------------------------------------------------------------

#[test]
fn zoo_input_too_small_is_input_error() {
    let dir = TempDir::new("shape");
    expect_error(
        &dir,
        &["info", "--model", "zoo:lenet5", "--input", "1x8x8"],
        2,
        &["shape mismatch"],
    );
}

#[test]
fn eval_on_data_of_other_shape_is_input_error() {
    let dir = TempDir::new("evalshape");
    train_mlp(dir.path(), "m.safetensors", &[]);
    expect_error(
        &dir,
        &["eval", "--model", "m.safetensors", "--data", "mnist10k"],
        2,
        &["shape mismatch", "mnist10k", "[1, 8, 8]", "[1, 28, 28]"],
    );
    // Same shape, more classes than the model outputs.
    expect_error(
        &dir,
        &[
            "eval",
            "--model",
            "m.safetensors",
            "--data",
            "synthetic:1x8x8:10:64",
        ],
        2,
        &["10 classes", "outputs 3"],
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Usage errors
// ---------------------------------------------------------------------------------------------

#[test]
fn usage_errors_exit_2() {
    let dir = TempDir::new("usage");
    expect_error(
        &dir,
        &["info", "--model", "zoo:lenet5", "--bogus-flag"],
        2,
        &["--bogus-flag"],
    );
    expect_error(
        &dir,
        &["train", "--data", SYNTH, "--out", "m.safetensors"],
        2,
        &["required", "--arch"],
    );
    expect_error(
        &dir,
        &["eval", "--data", SYNTH],
        2,
        &["required", "--model"],
    );
    expect_error(
        &dir,
        &["info", "--model", "zoo:lenet5", "--input", "3xAx3"],
        2,
        &["3xAx3", "expected a shape like"],
    );
    expect_error(
        &dir,
        &["info", "--model", "zoo:lenet5", "--input", "0x28x28"],
        2,
        &["0x28x28"],
    );
    expect_error(&dir, &["frobnicate"], 2, &["frobnicate"]);
    // No subcommand: clap prints the help on stderr (not an `error:` line) and exits 2.
    let out = mpq_in(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&[], &out));
    assert!(text(&out.stderr).contains("Usage: mpq"));
    assert!(!text(&out.stderr).contains("panicked"));
    expect_error(
        &dir,
        &["--seed", "abc", "info", "--model", "zoo:mlp"],
        2,
        &["abc"],
    );
    expect_error(
        &dir,
        &[
            "train",
            "--arch",
            "mlp",
            "--data",
            SYNTH,
            "--batch-size",
            "0",
            "--out",
            "m.safetensors",
        ],
        2,
        &["batch-size"],
    );
    expect_error(
        &dir,
        &["eval", "--model", "zoo:mlp", "--data", "nosuchdata"],
        2,
        &["nosuchdata"],
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Happy paths
// ---------------------------------------------------------------------------------------------

#[test]
fn info_resnet20_json() {
    let dir = TempDir::new("info");
    let model = [
        "--model",
        "zoo:resnet20",
        "--input",
        "3x32x32",
        "--classes",
        "10",
    ];
    let v = expect_json(dir.path(), &[&["info", "--json"], &model[..]].concat());
    assert_eq!(v["quantizable_layers"], 22, "{v}");
    assert_eq!(v["params"], 272_474, "{v}");
    assert_eq!(v["macs"], 40_813_184u64, "{v}");
    assert_eq!(v["classes"], 10, "{v}");
    assert_eq!(v["input_shape"], serde_json::json!([3, 32, 32]), "{v}");
    assert_eq!(v["layers"].as_array().map(Vec::len), Some(22), "{v}");
    // The human table mentions the same totals.
    let table = expect_ok(
        dir.path(),
        &[
            "info",
            "--model",
            "zoo:resnet20",
            "--input",
            "3x32x32",
            "--classes",
            "10",
        ],
    );
    assert!(table.contains("22 quantizable layers"), "{table}");
    assert!(table.contains("272,474"), "{table}");
    assert!(table.contains("40,813,184"), "{table}");
}

#[test]
fn train_then_eval_agree() {
    let dir = TempDir::new("traineval");
    let train = train_mlp(dir.path(), "F.safetensors", &[]);
    assert_eq!(train["arch"], "mlp", "{train}");
    assert_eq!(train["epochs"], 1, "{train}");
    let train_acc = train["accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("train accuracy missing: {train}"));
    let args = [
        "eval",
        "--model",
        "F.safetensors",
        "--data",
        SYNTH,
        "--json",
    ];
    let eval = parse_json(&expect_ok(dir.path(), &args), "mpq eval --json");
    for field in [
        "accuracy",
        "loss",
        "samples",
        "size_bytes",
        "avg_w_bits",
        "bops",
    ] {
        assert!(eval.get(field).is_some(), "eval JSON lacks {field}: {eval}");
    }
    let eval_acc = eval["accuracy"].as_f64().unwrap();
    assert_eq!(eval_acc, train_acc, "train {train}\neval {eval}");
    assert!((0.0..=1.0).contains(&eval_acc));
    let train_loss = train["loss"].as_f64().unwrap();
    let eval_loss = eval["loss"].as_f64().unwrap();
    assert!(
        (train_loss - eval_loss).abs() <= 1e-6 * train_loss.abs().max(1.0),
        "train loss {train_loss} vs eval loss {eval_loss}"
    );
    // `mpq info` reads the saved metadata back.
    let info = parse_json(
        &expect_ok(dir.path(), &["info", "--model", "F.safetensors", "--json"]),
        "mpq info --json",
    );
    assert_eq!(info["arch"], "mlp", "{info}");
    assert_eq!(info["classes"], 3, "{info}");
    assert_eq!(info["input_shape"], serde_json::json!([1, 8, 8]), "{info}");
}

#[test]
fn train_same_seed_same_weights() {
    let dir = TempDir::new("seedweights");
    let a = train_mlp(dir.path(), "a.safetensors", &["--seed", "7"]);
    let b = train_mlp(dir.path(), "b.safetensors", &["--seed", "7"]);
    assert_eq!(a["accuracy"], b["accuracy"]);
    assert_eq!(a["loss"], b["loss"]);
    let fa = std::fs::read(dir.join("a.safetensors")).unwrap();
    let fb = std::fs::read(dir.join("b.safetensors")).unwrap();
    let (mut ha, ta) = split_safetensors(&fa);
    let (mut hb, tb) = split_safetensors(&fb);
    assert!(ta == tb, "same seed must give identical tensor bytes");
    // Apart from the wall-clock time recorded in the training summary, the metadata match.
    let strip = |h: &mut serde_json::Value| {
        let meta = h["__metadata__"]["mpq"].as_str().expect("mpq metadata");
        let mut meta: serde_json::Value = serde_json::from_str(meta).unwrap();
        if let Some(t) = meta.get_mut("training").and_then(|t| t.as_object_mut()) {
            t.remove("seconds");
        }
        h["__metadata__"]["mpq"] = meta;
    };
    strip(&mut ha);
    strip(&mut hb);
    assert_eq!(ha, hb);
}

#[test]
fn train_same_seed_byte_identical_files() {
    let dir = TempDir::new("seedbytes");
    train_mlp(dir.path(), "a.safetensors", &["--seed", "7"]);
    train_mlp(dir.path(), "b.safetensors", &["--seed", "7"]);
    let fa = std::fs::read(dir.join("a.safetensors")).unwrap();
    let fb = std::fs::read(dir.join("b.safetensors")).unwrap();
    assert!(fa == fb, "same seed must give byte-identical files");
}

/// The conv path (parallel weight-gradient reduction over the batch, batch norm) must be as
/// reproducible as the MLP: same seed, byte-identical checkpoint, whatever the scheduling.
#[test]
fn conv_training_same_seed_byte_identical_files() {
    let dir = TempDir::new("convseed");
    for name in ["a.safetensors", "b.safetensors", "c.safetensors"] {
        let args = [
            "train",
            "--arch",
            "resnet8",
            "--data",
            "synthetic:3x16x16:4:192",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--out",
            name,
            "--quiet",
            "--seed",
            "3",
        ];
        expect_ok(dir.path(), &args);
    }
    let fa = std::fs::read(dir.join("a.safetensors")).unwrap();
    for other in ["b.safetensors", "c.safetensors"] {
        let fb = std::fs::read(dir.join(other)).unwrap();
        assert!(
            fa == fb,
            "same seed must give byte-identical conv checkpoints ({other})"
        );
    }
}

#[test]
fn train_different_seed_different_weights() {
    let dir = TempDir::new("seeddiff");
    train_mlp(dir.path(), "a.safetensors", &["--seed", "1"]);
    train_mlp(dir.path(), "b.safetensors", &["--seed", "2"]);
    let fa = std::fs::read(dir.join("a.safetensors")).unwrap();
    let fb = std::fs::read(dir.join("b.safetensors")).unwrap();
    assert!(split_safetensors(&fa).1 != split_safetensors(&fb).1);
}

// ---------------------------------------------------------------------------------------------
// 9. Help
// ---------------------------------------------------------------------------------------------

#[test]
fn help_lists_subcommands() {
    let dir = TempDir::new("help");
    let out = expect_ok(dir.path(), &["--help"]);
    for cmd in ["info", "train", "eval", "quickstart"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "--help should list {cmd}:\n{out}"
        );
    }
    for flag in ["--seed", "--threads", "--quiet", "--json"] {
        assert!(out.contains(flag), "--help should list {flag}:\n{out}");
    }
    let q = expect_ok(dir.path(), &["quickstart", "--help"]);
    assert!(q.contains("Usage: mpq quickstart"), "{q}");
    assert!(q.contains("--out"), "{q}");
    for cmd in ["info", "train", "eval"] {
        let h = expect_ok(dir.path(), &[cmd, "--help"]);
        assert!(h.contains(&format!("Usage: mpq {cmd}")), "{h}");
    }
    let v = expect_ok(dir.path(), &["--version"]);
    assert!(v.starts_with("mpq "), "{v}");
    // Help writes nothing.
    assert!(dir.listing().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 10. eval --policy (fake-quantized simulation of a plan)
// ---------------------------------------------------------------------------------------------

fn write_policy(dir: &Path, name: &str, layers: &[(&str, u32, u32)]) {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(n, w, a)| serde_json::json!({"name": n, "w_bits": w, "a_bits": a}))
        .collect();
    write_plan(dir, name, "uniform", layers.into());
}

#[test]
fn eval_policy_prices_and_simulates_the_plan() {
    let dir = TempDir::new("policy");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let all = [("fc1", 8, 8), ("fc2", 8, 8), ("fc3", 8, 8)];
    write_policy(dir.path(), "w8.json", &all);
    write_policy(
        dir.path(),
        "w2.json",
        &[("fc1", 2, 2), ("fc2", 2, 2), ("fc3", 2, 2)],
    );
    let eval = |policy: Option<&str>| {
        let mut args = vec![
            "eval",
            "--model",
            "m.safetensors",
            "--data",
            SYNTH,
            "--json",
        ];
        if let Some(p) = policy {
            args.extend(["--policy", p]);
        }
        parse_json(&expect_ok(dir.path(), &args), "mpq eval --json")
    };
    let (fp, w8, w2) = (eval(None), eval(Some("w8.json")), eval(Some("w2.json")));
    assert_eq!(fp["avg_w_bits"], 32.0);
    assert_eq!(w8["avg_w_bits"], 8.0);
    assert_eq!(w2["avg_w_bits"], 2.0);
    let bops = |v: &serde_json::Value| v["bops"].as_f64().unwrap();
    assert_eq!(bops(&fp) / bops(&w8), 16.0);
    assert_eq!(bops(&w8) / bops(&w2), 16.0);
    assert!(w8["size_bytes"].as_u64() < fp["size_bytes"].as_u64());
    // W8A8 stays close to FP32; the loss moves, so the plan really is applied.
    let acc = |v: &serde_json::Value| v["accuracy"].as_f64().unwrap();
    assert!((acc(&fp) - acc(&w8)).abs() <= 0.05, "{fp} vs {w8}");
    assert_ne!(fp["loss"], w2["loss"]);
}

#[test]
fn eval_policy_bad_layers_are_input_errors() {
    let dir = TempDir::new("badpolicy");
    train_mlp(dir.path(), "m.safetensors", &[]);
    write_policy(dir.path(), "unknown.json", &[("conv9", 4, 8)]);
    write_policy(dir.path(), "bits.json", &[("fc1", 9, 8)]);
    std::fs::write(dir.join("junk.json"), "{not json").unwrap();
    for (policy, fragment) in [
        ("unknown.json", "conv9"),
        ("bits.json", "fc1"),
        ("junk.json", "junk.json"),
    ] {
        let args = [
            "eval",
            "--model",
            "m.safetensors",
            "--data",
            SYNTH,
            "--policy",
            policy,
        ];
        expect_error(&dir, &args, 2, &[fragment]);
    }
}

// ---------------------------------------------------------------------------------------------
// 11. search --method uniform|random
// ---------------------------------------------------------------------------------------------

#[test]
fn search_uniform_and_random_meet_the_budget() {
    let dir = TempDir::new("search");
    let run = |args: &[&str]| {
        let mut all = vec![
            "search",
            "--model",
            "zoo:lenet5",
            "--avg-bits",
            "3",
            "--json",
        ];
        all.extend_from_slice(args);
        parse_json(&expect_ok(dir.path(), &all), "mpq search --json")
    };
    let u = run(&["--method", "uniform", "--out", "u.json"]);
    assert_eq!(u["method"], "uniform");
    assert_eq!(u["avg_w_bits"], 3.0);
    assert!(
        u["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["w_bits"] == 3)
    );
    for key in [
        "constraints",
        "seconds",
        "size_bytes",
        "bops",
        "omega",
        "latency_ms",
    ] {
        assert!(u.get(key).is_some(), "policy JSON lacks {key}");
    }
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("u.json")).unwrap()).unwrap();
    assert_eq!(on_disk["layers"], u["layers"]);
    let r1 = run(&["--method", "random", "--out", "r1.json", "--seed", "5"]);
    let r2 = run(&["--method", "random", "--out", "r2.json", "--seed", "5"]);
    assert_eq!(r1["layers"], r2["layers"], "same seed, same plan");
    assert!(r1["avg_w_bits"].as_f64().unwrap() <= 3.0 + 1e-9);
}

#[test]
fn search_infeasible_or_contradictory_budgets_exit_2() {
    let dir = TempDir::new("searchbad");
    let base = [
        "search",
        "--model",
        "zoo:lenet5",
        "--method",
        "uniform",
        "--out",
        "p.json",
    ];
    let mut infeasible = base.to_vec();
    infeasible.extend(["--avg-bits", "1.5"]);
    expect_error(&dir, &infeasible, 2, &["avg_bits", "2.000000"]);
    let mut both = base.to_vec();
    both.extend(["--avg-bits", "3", "--max-size-mb", "1"]);
    let out = mpq_in(dir.path(), &both);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.join("p.json").exists());
}

/// Files of a newer format version, or of another format, are refused with one line and exit
/// 2 (`docs/file-formats.md`); a file without a version (an older mpq's) is read.
#[test]
fn newer_or_foreign_file_formats_exit_2() {
    let dir = TempDir::new("formats");
    let d = dir.path();
    let policy = |extra: &str| {
        format!(
            r#"{{{extra}"method": "uniform", "layers": [{{"name": "fc1", "w_bits": 4, "a_bits": 8}},
                {{"name": "fc2", "w_bits": 4, "a_bits": 8}}, {{"name": "fc3", "w_bits": 4, "a_bits": 8}}]}}"#
        )
    };
    std::fs::write(dir.join("old.json"), policy("")).unwrap();
    let newer = policy(r#""format": "mpq.policy", "version": 99, "#);
    std::fs::write(dir.join("new.json"), newer).unwrap();
    std::fs::write(dir.join("sens.json"), policy(r#""format": "mpq.policy", "#)).unwrap();
    fn hw(p: &str) -> Vec<&str> {
        let v = [
            "hw",
            "--model",
            "zoo:mlp",
            "--input",
            "1x8x8",
            "--classes",
            "3",
        ];
        [
            &v[..],
            &["--hardware", "bitfusion", "--policy", p, "--json"],
        ]
        .concat()
    }
    let ok = parse_json(&expect_ok(d, &hw("old.json")), "hw with a version-0 policy");
    assert_eq!(ok["layers"][0]["w_bits"], 4);
    let msg = expect_error(
        &dir,
        &hw("new.json"),
        2,
        &["new.json", "version 99", "newer mpq"],
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    let search = [
        "search",
        "--model",
        "zoo:mlp",
        "--input",
        "1x8x8",
        "--classes",
        "3",
        "--method",
        "ilp",
        "--avg-bits",
        "4",
        "--sensitivity",
        "sens.json",
        "--out",
        "p.json",
    ];
    expect_error(
        &dir,
        &search,
        2,
        &["sens.json", "mpq.policy", "mpq.sensitivity"],
    );
}

// ---------------------------------------------------------------------------------------------
// mpq analyze (Hessian sensitivity)
// ---------------------------------------------------------------------------------------------

/// ResNet-8 on 3x8x8 inputs, 3 classes: 10 layers with residual downsample convs.
const R8: &[&str] = &[
    "--model",
    "zoo:resnet8",
    "--input",
    "3x8x8",
    "--classes",
    "3",
];

/// Small ResNet-8 analysis on synthetic 3x8x8 data (every metric, short iterations), after
/// `analyze` and [`R8`].
const ANALYZE: &[&str] = &[
    "--data",
    "synthetic:3x8x8:3:64",
    "--batches",
    "2",
    "--batch-size",
    "8",
    "--max-iter",
    "12",
    "--lanczos-steps",
    "6",
    "--quiet",
];

/// The analysis JSON on disk and on stdout, with `seconds` removed.
fn analyze_json(dir: &Path, out: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = [&["analyze"], R8, ANALYZE].concat();
    args.extend_from_slice(extra);
    args.extend(["--out", out, "--json"]);
    let stdout = expect_ok(dir, &args);
    let printed = parse_json(&stdout, "mpq analyze --json");
    let mut on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(out)).unwrap()).unwrap();
    assert_eq!(
        printed, on_disk,
        "stdout and the file should hold the same table"
    );
    on_disk.as_object_mut().unwrap().remove("seconds");
    on_disk
}

#[test]
fn analyze_same_seed_bit_identical_json() {
    let dir = TempDir::new("analyze");
    let a = analyze_json(dir.path(), "a.json", &["--metric", "all"]);
    let b = analyze_json(dir.path(), "b.json", &["--metric", "all"]);
    // Same seed, same inputs: every number identical (text equality of the JSON).
    assert_eq!(a.to_string(), b.to_string());
    assert!(dir.join("a.svg").is_file(), "density plot next to the JSON");
    let svg = std::fs::read_to_string(dir.join("a.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    for key in [
        "model",
        "metric",
        "estimator",
        "seed",
        "batches",
        "batch_size",
        "hvp_count",
        "layers",
    ] {
        assert!(a.get(key).is_some(), "sensitivity JSON lacks {key}");
    }
    assert_eq!(a["model"], "zoo:resnet8");
    assert_eq!(a["metric"], "all");
    assert_eq!(a["estimator"], "hutchinson");
    assert_eq!(a["batches"], 2);
    assert_eq!(a["batch_size"], 8);
    assert!(a["hvp_count"].as_u64().unwrap() > 0);
    let layers = a["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 10, "resnet8: 7 convs, 2 downsample convs, fc");
    for l in layers {
        for key in [
            "name",
            "op",
            "params",
            "macs",
            "trace",
            "trace_stderr",
            "trace_per_param",
            "top_eigenvalue",
            "act_trace",
            "channel_traces",
        ] {
            assert!(!l[key].is_null(), "layer {} lacks {key}", l["name"]);
        }
        let ch: f64 = l["channel_traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum();
        let tr = l["trace"].as_f64().unwrap();
        assert!(
            (ch - tr).abs() <= 1e-9 * tr.abs().max(1e-12),
            "{ch} vs {tr}"
        );
    }
    // Another seed draws other probes.
    let c = analyze_json(dir.path(), "c.json", &["--metric", "trace", "--seed", "1"]);
    let d = analyze_json(dir.path(), "d.json", &["--metric", "trace"]);
    assert_ne!(c["layers"][0]["trace"], d["layers"][0]["trace"]);
    assert_eq!(c["layers"][0]["channel_traces"], serde_json::Value::Null);
}

#[test]
fn analyze_human_table_lists_every_layer() {
    let dir = TempDir::new("analyzetable");
    let out = mpq_in(
        dir.path(),
        &[
            "analyze",
            "--model",
            "zoo:mlp",
            "--input",
            "1x8x8",
            "--classes",
            "3",
            "--data",
            SYNTH,
            "--batch-size",
            "16",
            "--probes",
            "3",
            "--out",
            "s.json",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for name in [
        "layer",
        "trace",
        "stderr",
        "fc1",
        "fc2",
        "fc3",
        "3 weight probes",
    ] {
        assert!(stdout.contains(name), "{name} missing from\n{stdout}");
    }
    assert!(dir.join("s.json").is_file());
}

/// Bad input: exit 2, one `error:` line naming the problem, no output file.
#[test]
fn analyze_bad_inputs_exit_2_without_output() {
    let dir = TempDir::new("analyzebad");
    let base = [
        "analyze",
        "--model",
        "zoo:mlp",
        "--input",
        "1x8x8",
        "--classes",
        "3",
        "--data",
        SYNTH,
        "--out",
        "s.json",
    ];
    let check = |extra: &[&str], fragments: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let stderr = expect_error(&dir, &args, 2, fragments);
        let error_lines = stderr.lines().filter(|l| l.starts_with("error")).count();
        assert_eq!(error_lines, 1, "one error line:\n{stderr}");
        assert!(!dir.join("s.json").exists());
    };
    let b16 = ["--batch-size", "16"];
    check(&["--batches", "0"], &["batches", "at least 1"]);
    check(&["--batch-size", "0"], &["batch-size", "at least 1"]);
    check(&["--batches", "100"], &["samples"]);
    check(&[&b16[..], &["--tol", "0"]].concat(), &["tol"]);
    check(&[&b16[..], &["--layers", "fc9"]].concat(), &["fc9"]);
    check(
        &[&b16[..], &["--estimator", "exact"]].concat(),
        &["exact-max-params"],
    );
    check(&[&b16[..], &["--probes", "0"]].concat(), &["probes"]);
    check(
        &[&b16[..], &["--micro-batch", "0"]].concat(),
        &["micro-batch"],
    );
    check(
        &[&b16[..], &["--estimator", "hutchpp"]].concat(),
        &["hutchpp is not offered", "per-layer", "hutchinson"],
    );
    // NaN in the weights: a trained MLP with one weight overwritten by NaN.
    train_mlp(dir.path(), "m.safetensors", &[]);
    poison(
        &dir.join("m.safetensors"),
        &dir.join("nan.safetensors"),
        "fc2.weight",
        1,
    );
    let nan = analyze_args("nan.safetensors", "s.json", &[]);
    let stderr = expect_error(&dir, &nan, 2, &["non-finite", "fc2.weight"]);
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1);
    assert!(!dir.join("s.json").exists());
}

/// `bytes` (a safetensors file) with the f32 tensor `name` multiplied by `factor` and, if
/// given, the mpq metadata's `normalization` replaced.
fn edit_safetensors(
    bytes: &[u8],
    scale: &[(&str, f32)],
    normalization: Option<serde_json::Value>,
) -> Vec<u8> {
    let (mut header, data) = split_safetensors(bytes);
    let mut data = data.to_vec();
    for &(name, factor) in scale {
        let [a, b] = [0, 1].map(|k| header[name]["data_offsets"][k].as_u64().unwrap() as usize);
        for c in data[a..b].chunks_exact_mut(4) {
            let x = f32::from_le_bytes(c.try_into().unwrap()) * factor;
            c.copy_from_slice(&x.to_le_bytes());
        }
    }
    if let Some(norm) = normalization {
        let meta = &mut header["__metadata__"]["mpq"];
        let mut m: serde_json::Value = serde_json::from_str(meta.as_str().unwrap()).unwrap();
        m["normalization"] = norm;
        *meta = serde_json::Value::String(m.to_string());
    }
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// Non-finite values that only show up during the analysis: input data that normalise to
/// ±inf (a model whose stored std is a denormal), and finite weights whose gradient overflows
/// f32 (fc1's gradient is ~‖W2‖·‖W3‖ = 1e40 while the loss stays finite), so the products turn
/// non-finite. Both exit 2 with one error line and leave no output file. (A model without
/// quantizable layers cannot be loaded from the CLI, whose models are zoo architectures, and
/// data files hold u8 pixels; the library tests cover those cases.)
#[test]
fn analyze_non_finite_data_and_products_exit_2_without_output() {
    let dir = TempDir::new("analyzenonfinite");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let bytes = std::fs::read(dir.join("m.safetensors")).unwrap();
    let run = |file: &str, contents: Vec<u8>, fragments: &[&str]| {
        std::fs::write(dir.join(file), contents).unwrap();
        let args = analyze_args(file, "s.json", &[]);
        let stderr = expect_error(&dir, &args, 2, fragments);
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1);
        assert!(!dir.join("s.json").exists());
    };
    let tiny_std = serde_json::json!({ "mean": [0.5], "std": [1e-45] });
    run(
        "inf_data.safetensors",
        edit_safetensors(&bytes, &[], Some(tiny_std)),
        &["non-finite", "input data"],
    );
    let overflow = [
        ("fc1.weight", 1e-15),
        ("fc1.bias", 1e-15),
        ("fc2.weight", 1e15),
        ("fc3.weight", 1e25),
    ];
    run(
        "overflow.safetensors",
        edit_safetensors(&bytes, &overflow, None),
        &["non-finite", "Hessian-vector product"],
    );
}
