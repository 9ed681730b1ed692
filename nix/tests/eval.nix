# Evaluates nix/module.nix without nixpkgs (none is reachable here): the few `lib` and `pkgs`
# functions it uses are given as stubs, so that CI checks that the module evaluates, that its
# options are the ones docs/OPERATIONS.md names, and what unit it renders.
#
#   nix-instantiate --eval --strict --json nix/tests/eval.nix
let
  lib = rec {
    mkEnableOption = description: {
      inherit description;
      default = false;
    };
    mkOption = attrs: attrs;
    mkDefault = x: x;
    mkIf = cond: content: if cond then content else { };
    literalExpression = x: x;
    types = {
      package = "package";
      str = "str";
      bool = "bool";
      path = "path";
      nullOr = t: "null or ${t}";
      int = "int";
      listOf = t: "list of ${t}";
      attrsOf = t: "attrs of ${t}";
      enum = values: "one of ${builtins.concatStringsSep ", " values}";
    };
    toInt = builtins.fromJSON;
    last = l: builtins.elemAt l (builtins.length l - 1);
    splitString = sep: s: builtins.filter builtins.isString (builtins.split sep s);
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
    getExe = p: "${p}/bin/fleet-ledger";
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: a: if cond then a else { };
    escapeShellArg = s: "'${s}'";
  };
  pkgs = {
    coreutils = "/nix/store/0000-coreutils";
    formats.json = _: {
      type = "json";
      # The rendered config rides along after a '#', for the test to read back.
      generate = name: value: "/nix/store/0000-${name}#${builtins.toJSON value}";
    };
  };
  cfg = {
    enable = true;
    package = "/nix/store/0000-fleet-ledger";
    database = "/var/lib/fleet-ledger/ledger.redb";
    listen = "0.0.0.0:8443";
    settings = {
      signing_key = "/run/keys/cp.key";
    };
    initOrigin = "cp.example.org/fleet";
    environmentFile = null;
    openFirewall = true;
    logFormat = "json";
    failover = {
      enable = true;
      node = "cp-a";
      role = "standby";
      etcd = [ "http://10.0.0.21:2379" ];
      prefix = "/fleet-ledger";
      leaseTtlSecs = 5;
      peers = {
        cp-b = "http://10.0.0.12:8443";
      };
      tokenFile = "/run/keys/failover.token";
      initialWriter = "cp-a";
      strictSync = false;
      minSync = 1;
      shipTimeoutMs = 1500;
      witnesses = [ ];
      witnessesRequired = null;
    };
  };
  module = import ../module.nix {
    config.services.fleet-ledger = cfg;
    inherit lib pkgs;
  };
  unit = module.config.systemd.services.fleet-ledger;
in
{
  options = builtins.attrNames module.options.services.fleet-ledger;
  failoverOptions = builtins.attrNames module.options.services.fleet-ledger.failover;
  settings = builtins.fromJSON (lib.last (lib.splitString "#" unit.serviceConfig.ExecStart));
  assertions = map (a: a.assertion) module.config.assertions;
  firewall = module.config.networking.firewall.allowedTCPPorts;
  execStart = unit.serviceConfig.ExecStart;
  type = unit.serviceConfig.Type;
  environment = unit.environment;
  preStart = unit.preStart;
  user = module.config.users.users.fleet-ledger.isSystemUser;
}
