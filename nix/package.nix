# The fleet-ledger binary, as nixpkgs builds Rust services: dependencies vendored from
# Cargo.lock, only the daemon's package built.
{
  lib,
  rustPlatform,
}:

rustPlatform.buildRustPackage {
  pname = "fleet-ledger";
  version = "0.1.0";

  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "fleet-ledger"
    "--bin"
    "fleet-ledger"
  ];

  # The test suite needs Chromium, Go, an S3 server and network loopback servers; `.ci/run`
  # runs it. The build itself is checked by `cargo build --locked`.
  doCheck = false;

  postInstall = ''
    install -Dm644 docs/OPERATIONS.md docs/FORMAT.md README.md -t $out/share/doc/fleet-ledger
    install -Dm644 deploy/fleet-ledger.service -t $out/share/doc/fleet-ledger/examples
  '';

  meta = {
    description = "Signed, hash-chained, witnessable event log of a NixOS fleet control plane";
    homepage = "https://github.com/fleet-ledger/fleet-ledger";
    license = lib.licenses.asl20;
    mainProgram = "fleet-ledger";
    platforms = lib.platforms.linux;
  };
}
