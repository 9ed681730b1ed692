# Evaluates nix/nixfleet-control-plane.nix (and nix/nixfleet-trust.nix) without nixpkgs, as
# eval.nix does nix/module.nix: a fleet configured with nixfleet's option names, and what
# services.fleet-ledger and /etc/nixfleet/cp/trust.json become.
#
#   nix-instantiate --eval --strict --json nix/tests/nixfleet-eval.nix
let
  lib = rec {
    mkEnableOption = description: {
      inherit description;
      default = false;
    };
    mkOption = attrs: attrs;
    mkIf = cond: content: if cond then content else { };
    mkForce = x: x;
    optional = cond: x: if cond then [ x ] else [ ];
    optionalAttrs = cond: a: if cond then a else { };
    filterAttrs =
      pred: set:
      builtins.listToAttrs (
        map (name: {
          inherit name;
          value = set.${name};
        }) (builtins.filter (name: pred name set.${name}) (builtins.attrNames set))
      );
    hasAttrByPath =
      path: set:
      if path == [ ] then
        true
      else
        set ? ${builtins.head path} && hasAttrByPath (builtins.tail path) set.${builtins.head path};
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
    types = {
      package = "package";
      str = "str";
      bool = "bool";
      path = "path";
      nullOr = t: "null or ${t}";
      attrsOf = t: "attrs of ${t}";
      listOf = t: "list of ${t}";
      ints.positive = "positive int";
    };
  };
  pkgs.writers.writeJSON = name: value: { inherit name value; };
  nixfleet = {
    enable = true;
    package = null;
    listen = "0.0.0.0:8080";
    tls = {
      cert = "/run/secrets/cp.pem";
      key = "/run/secrets/cp.key";
      clientCa = "/etc/nixfleet/fleet-ca.pem";
    };
    artifactPath = "/var/lib/nixfleet-cp/fleet/releases/fleet.resolved.json";
    signaturePath = "/var/lib/nixfleet-cp/fleet/releases/fleet.resolved.json.sig";
    trustFile = "/etc/nixfleet/cp/trust.json";
    observedPath = "/var/lib/nixfleet-cp/observed.json";
    freshnessWindowMinutes = 180;
    confirmDeadlineSecs = 360;
    agentCnSuffix = "fleet.lab.internal";
    agentCertValiditySecs = 86400;
    strict = true;
    fleetCaCert = "/etc/nixfleet/fleet-ca.pem";
    fleetCaKey = null;
    tpmCaPubkeyRaw = "/etc/nixfleet/fleet-ca.pub.raw";
    tpmCaSignWrapper = "/run/current-system/sw/bin/tpm-sign";
    allowFileCaKey = false;
    auditLogPath = "/var/lib/nixfleet-cp/issuance.log";
    dbPath = "/var/lib/nixfleet-cp/state.db";
    closureUpstream = "https://cache.lab.internal";
    rolloutsDir = null;
    channelRefsSource = {
      artifactUrl = "https://ci.lab.internal/releases/fleet.resolved.json";
      signatureUrl = "https://ci.lab.internal/releases/fleet.resolved.json.sig";
      tokenFile = "/run/secrets/ci-token";
    };
    revocationsSource = {
      artifactUrl = "https://ci.lab.internal/releases/revocations.json";
      signatureUrl = "https://ci.lab.internal/releases/revocations.json.sig";
      tokenFile = null;
    };
    bootstrapNoncesSource = {
      artifactUrl = "https://ci.lab.internal/releases/bootstrap-nonces.json";
      signatureUrl = null;
      tokenFile = null;
    };
    rolloutsSource = {
      artifactUrlTemplate = "https://ci.lab.internal/releases/rollouts/{rolloutId}.json";
      signatureUrlTemplate = "https://ci.lab.internal/releases/rollouts/{rolloutId}.json.sig";
      tokenFile = null;
    };
    openFirewall = true;
  };
  trustOptions = import ../nixfleet-trust.nix { inherit lib; };
  module = import ../nixfleet-control-plane.nix {
    config = {
      services.nixfleet-control-plane = nixfleet;
      nixfleet.trust = {
        ciReleaseKey = {
          current = {
            algorithm = "ed25519";
            public = "CI";
          };
          previous = null;
          rejectBefore = null;
          retireAt = null;
          successor = null;
        };
        cacheKeys = [ ];
        orgRootKey = {
          current = "ROOT";
          previous = null;
          successor = null;
          rejectBefore = null;
          retireAt = null;
        };
        rootCAPem = null;
        issuanceCAPems = [ ];
      };
    };
    options = trustOptions.options;
    inherit lib pkgs;
  };
in
{
  options = builtins.attrNames module.options.services.nixfleet-control-plane;
  trustOptions = builtins.attrNames trustOptions.options.nixfleet.trust;
  assertions = map (a: a.assertion) module.config.assertions;
  warnings = module.config.warnings;
  fleetLedger = module.config.services.fleet-ledger;
  trustJson = module.config.environment.etc."nixfleet/cp/trust.json".source.value;
  serviceConfig = module.config.systemd.services.fleet-ledger.serviceConfig;
}
