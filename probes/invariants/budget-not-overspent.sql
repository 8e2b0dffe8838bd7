-- The campaign budget account never goes below zero (the flash campaign never overspends).
SELECT id AS account, balance
FROM ledger.accounts
WHERE kind = 'budget' AND balance < 0
