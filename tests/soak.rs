//! The short chaos soak (issue 15): `bench/soak.py` with fixed seeds and
//! every fault kind, against the binary under test. Its checker judges the
//! manager from moto's state, the EC2 calls that reached moto and the dumps
//! Jenkins served; any violation fails the test, printed with its seed, run
//! and pass (`python3 bench/soak.py --seed N …` replays the same schedule).
//! The long soak is `scripts/bench.sh --parts soak`.

use std::path::PathBuf;
use std::process::Command;

/// Two seeds of 20 simulated minutes each at 20× (about two minutes of wall
/// time each, the drain included).
const SEEDS: [u64; 2] = [11, 12];

#[test]
fn a_short_chaos_soak_of_every_fault_kind_breaks_no_invariant() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for seed in SEEDS {
        let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(repo.join("bench/soak.py"))
            .args(["--binary", env!("CARGO_BIN_EXE_slave_manager"), "--seed", &seed.to_string()])
            .args(["--sim-minutes", "20", "--time-scale", "20", "--every-kind", "--drain", "20"])
            .output()
            .expect("python3 bench/soak.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("seed {seed}:\n{stdout}");
        assert!(
            out.status.success(),
            "the soak with seed {seed} failed ({:?}):\n{}\n{stdout}",
            out.status,
            stderr
                .lines()
                .filter(|l| l.contains("VIOLATION") || l.contains("NET GAP") || l.contains("could not"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(stdout.contains("| violations: double_agent | 0 |"), "no figures printed:\n{stdout}\n{stderr}");
    }
}
