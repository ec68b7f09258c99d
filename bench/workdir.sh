# Sourced by the acceptance runs in bench/*/ once they have set DIR: sets MPQ (the release
# binary of this checkout unless MPQ is given), creates DIR and moves into it, and sets ARCH
# (default lenet5), EPOCHS (default 10) and MODEL=ARCH.safetensors, the model trained there.
MPQ=${MPQ:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/mpq}
mkdir -p "$DIR"
cd "$DIR"
ARCH=${ARCH:-lenet5}
EPOCHS=${EPOCHS:-10}
MODEL=$ARCH.safetensors
