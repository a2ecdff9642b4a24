if __name__ == "__main__": from sppdet.cli import main; main(prog_name="sppdet")  # noqa: E701,E702
