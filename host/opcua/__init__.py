"""OPC UA for PLCs, MESs and sites (issue 13): OPEN-SCS pool manager on the ledger, security, client."""
