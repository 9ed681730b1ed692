{
  description = "fleet-ledger: the signed, verifiable event log of a NixOS fleet control plane";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        fleet-ledger = pkgs.callPackage ./nix/package.nix { };
        default = fleet-ledger;
      });

      overlays.default = final: prev: { fleet-ledger = final.callPackage ./nix/package.nix { }; };

      # services.fleet-ledger (docs/OPERATIONS.md, "NixOS"). Its package defaults to this
      # flake's build.
      nixosModules.fleet-ledger =
        { pkgs, lib, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.fleet-ledger.package =
            lib.mkDefault
              self.packages.${pkgs.stdenv.hostPlatform.system}.fleet-ledger;
        };
      nixosModules.default = self.nixosModules.fleet-ledger;
      # nixfleet's services.nixfleet-control-plane options, served by fleet-ledger
      # (docs/OPERATIONS.md, "Switching from nixfleet's control plane").
      nixosModules.nixfleet-control-plane = {
        imports = [
          self.nixosModules.fleet-ledger
          ./nix/nixfleet-control-plane.nix
        ];
      };
      # nixfleet's nixfleet.trust options, for a fleet that does not import nixfleet's own.
      nixosModules.nixfleet-trust = ./nix/nixfleet-trust.nix;

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
