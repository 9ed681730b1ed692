# nixfleet's `nixfleet.trust` options (contracts/trust.nix, NIXFLEET-WIRE.md §11.2), for a
# fleet that switches its control plane to fleet-ledger without importing nixfleet's own
# contracts module. nix/nixfleet-control-plane.nix writes /etc/nixfleet/cp/trust.json from
# them, as nixfleet's module does. Import one of the two declarations, not both.
{ lib, ... }:

let
  inherit (lib) mkOption types;
  time = mkOption {
    type = types.nullOr types.str;
    default = null;
    description = "An RFC 3339 time, or null.";
  };
  ciKey = mkOption {
    type = types.nullOr (types.attrsOf types.str);
    default = null;
    description = "{ algorithm = \"ed25519\" | \"ecdsa-p256\"; public = <base64>; } or null.";
  };
  rootKey = mkOption {
    type = types.nullOr types.str;
    default = null;
    description = "A base64 ed25519 public key, or null.";
  };
in
{
  options.nixfleet.trust = {
    ciReleaseKey = {
      current = ciKey;
      previous = ciKey;
      successor = ciKey;
      rejectBefore = time;
      retireAt = time;
    };
    cacheKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Binary cache public keys.";
    };
    orgRootKey = {
      current = rootKey;
      previous = rootKey;
      successor = rootKey;
      rejectBefore = time;
      retireAt = time;
    };
    rootCAPem = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Not written into trust.json (as nixfleet's module).";
    };
    issuanceCAPems = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Not written into trust.json (as nixfleet's module).";
    };
  };
}
