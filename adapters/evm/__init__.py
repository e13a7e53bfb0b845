"""The EVM adapter: Solidity contracts, their compiled artifacts, and the code that talks to EVM
nodes through web3.py.

``adapters/evm/contracts/*.sol`` are the sources, ``adapters/evm/artifacts/<evm version>/*.json``
the committed build, one set per EVM version a chain may run (``python -m adapters.evm.compile
[--check]``), and :func:`adapters.evm.contracts.load_artifact` reads them, so running the
relayer never needs a compiler.
"""
