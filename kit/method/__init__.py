"""The paper's method: config and recipes, attacks, importance, losses, the engine, the contract."""
