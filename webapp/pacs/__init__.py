"""The PACS side: instances arrive over DICOM (`listener`, C-STORE) or DICOMweb (`pull`), wait in a queue
(`queue`: in the listener's own process, or Redis with RQ workers on any host), are analysed once by the
upload path (`jobs`), and their results go back to the PACS as a DICOM SR and a secondary capture
(`results`). README, "PACS", has the set-up and the DICOM conformance statement."""
