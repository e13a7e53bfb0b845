// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {ERC20} from "./ERC20.sol";

/// @title TestToken: a devnet ERC-20 anyone can mint
/// @notice For devnets and tests only: `mint` is open to everyone, so it has no value.
contract TestToken is ERC20 {
    constructor(string memory name_, string memory symbol_, uint8 decimals_)
        ERC20(name_, symbol_, decimals_)
    {}

    function mint(address to, uint256 value) external {
        _mint(to, value);
    }
}
