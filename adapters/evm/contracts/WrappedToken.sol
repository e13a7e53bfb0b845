// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {ERC20} from "./ERC20.sol";

/// @title WrappedToken: the representation of a remote home token
/// @notice Only its bridge mints (when tokens were locked on the home chain) and burns (when a
///         holder sends them home), so the supply is backed by the home chain's locked balance.
contract WrappedToken is ERC20 {
    address public immutable bridge;

    error NotBridge(address caller);

    constructor(string memory name_, string memory symbol_, uint8 decimals_, address bridge_)
        ERC20(name_, symbol_, decimals_)
    {
        if (bridge_ == address(0)) revert ZeroAddress();
        bridge = bridge_;
    }

    modifier onlyBridge() {
        if (msg.sender != bridge) revert NotBridge(msg.sender);
        _;
    }

    function mint(address to, uint256 value) external onlyBridge {
        _mint(to, value);
    }

    /// @notice Burns `from`'s tokens without an allowance: the bridge only calls this for
    ///         `from == msg.sender` of its own transferRemote.
    function burn(address from, uint256 value) external onlyBridge {
        _burn(from, value);
    }
}
