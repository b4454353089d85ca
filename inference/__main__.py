from aidx.inference.cli import main

main()
